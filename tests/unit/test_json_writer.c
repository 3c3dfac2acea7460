/* JSON writer: separators at every nesting level, escaping, raw splices. */
#include <jansson.h>
#include "check.h"
#include "mxkeys/json_writer.h"

int main(void)
{
    mx_buf_t out = MX_BUF_INIT;
    mx_jw_t jw;
    mx_jw_init(&jw, &out);
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "a");
    mx_jw_int(&jw, -9007199254740991LL);
    mx_jw_key(&jw, "b");
    mx_jw_array_begin(&jw);
    mx_jw_bool(&jw, true);
    mx_jw_null(&jw);
    mx_jw_object_begin(&jw);
    mx_jw_object_end(&jw);
    mx_jw_array_begin(&jw);
    mx_jw_array_end(&jw);
    mx_jw_string(&jw, "q\"\\\n\x01é\xe2\x80\xa8/");
    mx_jw_array_end(&jw);
    mx_jw_key(&jw, "c");
    mx_jw_raw(&jw, "{\"x\":[1,2]}", 11);
    mx_jw_key(&jw, "d");
    mx_jw_object_begin(&jw);
    mx_jw_key(&jw, "e");
    mx_jw_bool(&jw, false);
    mx_jw_key(&jw, "f");
    mx_jw_stringn(&jw, "xyz", 2);
    mx_jw_object_end(&jw);
    mx_jw_object_end(&jw);
    CHECK_STREQ(out.data, "{\"a\":-9007199254740991,\"b\":[true,null,{},[],\"q\\\"\\\\\\n\\u0001é\xe2\x80\xa8/\"],"
                          "\"c\":{\"x\":[1,2]},\"d\":{\"e\":false,\"f\":\"xy\"}}");
    /* what we write is JSON that a strict parser reads back */
    json_error_t err;
    json_t *v = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &err);
    CHECK(v != NULL);
    json_decref(v);

    mx_buf_reset(&out);
    mx_jw_init(&jw, &out);
    mx_jw_array_begin(&jw);
    mx_jw_array_end(&jw);
    CHECK_STREQ(out.data, "[]");
    mx_buf_free(&out);
    return check_finish("json_writer");
}

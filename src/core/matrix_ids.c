/* Matrix identifier grammars (see mxkeys/matrix_ids.h). */
#include "mxkeys/matrix_ids.h"
#include <ctype.h>
#include <string.h>

#define MAX_USER_ID 255
#define MAX_DNS_NAME 255

static bool port_valid(const char *p)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; isdigit((unsigned char)p[n]); n++) {
        v = v * 10 + (unsigned long)(p[n] - '0');
        if (v > 65535)
            return false;
    }
    return n > 0 && p[n] == '\0' && v > 0;
}

bool mx_server_name_valid(const char *s)
{
    const char *p = s;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (end == NULL || end == p + 1)
            return false;
        for (const char *c = p + 1; c < end; c++)
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.')
                return false;
        p = end + 1;
    } else {
        const char *start = p;
        while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
            p++;
        if (p == start || p - start > MAX_DNS_NAME)
            return false;
    }
    if (*p == '\0')
        return true;
    return *p == ':' && port_valid(p + 1);
}

bool mx_user_id_valid(const char *user_id)
{
    size_t len = strlen(user_id);
    if (len > MAX_USER_ID || user_id[0] != '@')
        return false;
    const char *colon = strchr(user_id, ':');
    if (colon == NULL || colon == user_id + 1)
        return false;
    for (const char *c = user_id + 1; c < colon; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e)
            return false;
    return mx_server_name_valid(colon + 1);
}

const char *mx_user_id_server(const char *user_id)
{
    const char *colon = strchr(user_id, ':');
    return colon ? colon + 1 : "";
}

/* Rotating a multi-host conninfo: which conninfos count as multi-host, that each host keeps its port when the list
 * starts elsewhere, and that the conninfo's keywords win over the defaults. Connections are only started (to ports
 * on 127.0.0.1 nothing listens on, or to addresses never reached): PQhost/PQport say where libpq begins. */
#include <stdlib.h>
#include "check.h"
#include "mxkeys/db_hosts.h"

static const char *const no_defaults[] = {NULL};

static void check_first(const char *conninfo, size_t first, const char *host, const char *port)
{
    mx_db_hosts_t *h = mx_db_hosts_new(conninfo);
    CHECK(h != NULL);
    if (h == NULL)
        return;
    PGconn *pg = mx_db_hosts_connect_start(h, first, no_defaults, no_defaults);
    CHECK(pg != NULL);
    if (pg != NULL) {
        CHECK_STREQ(PQhost(pg), host);
        CHECK_STREQ(PQport(pg), port);
        CHECK(mx_db_hosts_current(h, pg) == (int)(first % mx_db_hosts_count(h)));
        PQfinish(pg);
    }
    mx_db_hosts_free(h);
}

int main(void)
{
    /* one host, none, or lists libpq itself refuses: left alone */
    CHECK(mx_db_hosts_new("host=127.0.0.1 port=1 dbname=x") == NULL);
    CHECK(mx_db_hosts_new("dbname=x") == NULL);
    CHECK(mx_db_hosts_new("postgresql://127.0.0.1:1/x") == NULL);
    CHECK(mx_db_hosts_new("host=a,b,c port=1,2") == NULL);
    CHECK(mx_db_hosts_new("host='unterminated") == NULL);

    const char *kw = "host=127.0.0.1,127.0.0.1,127.0.0.1 port=9,19,29 dbname=x connect_timeout=1";
    mx_db_hosts_t *h = mx_db_hosts_new(kw);
    CHECK(h != NULL && mx_db_hosts_count(h) == 3);
    mx_db_hosts_free(h);
    check_first(kw, 0, "127.0.0.1", "9");
    check_first(kw, 1, "127.0.0.1", "19");
    check_first(kw, 2, "127.0.0.1", "29");
    check_first(kw, 3, "127.0.0.1", "9");
    /* URIs, and one port for every host */
    check_first("postgresql://u@127.0.0.1:39,127.0.0.2:49/x?connect_timeout=1", 1, "127.0.0.2", "49");
    check_first("host=127.0.0.1,127.0.0.3 port=59 dbname=x connect_timeout=1", 1, "127.0.0.3", "59");
    /* hostaddr lists rotate with the host names they belong to */
    check_first("host=a.invalid,b.invalid hostaddr=127.0.0.1,127.0.0.4 port=69,79 dbname=x connect_timeout=1", 1,
                "b.invalid", "79");

    /* the defaults come first: the conninfo's own keywords override them */
    h = mx_db_hosts_new("host=127.0.0.1,127.0.0.1 port=9,19 dbname=x application_name=mine");
    CHECK(h != NULL);
    if (h != NULL) {
        const char *const keys[] = {"application_name", "connect_timeout", NULL};
        const char *const values[] = {"theirs", "3", NULL};
        PGconn *pg = mx_db_hosts_connect_start(h, 0, keys, values);
        CHECK(pg != NULL);
        if (pg != NULL) {
            PQconninfoOption *opts = PQconninfo(pg);
            for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
                if (strcmp(o->keyword, "application_name") == 0)
                    CHECK_STREQ(o->val, "mine");
                if (strcmp(o->keyword, "connect_timeout") == 0)
                    CHECK_STREQ(o->val, "3");
                if (strcmp(o->keyword, "dbname") == 0)
                    CHECK_STREQ(o->val, "x");
            }
            PQconninfoFree(opts);
            PQfinish(pg);
        }
        mx_db_hosts_free(h);
    }
    return check_finish("db_hosts");
}

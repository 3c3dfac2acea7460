#include "mint.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "mxkeys/buf.h"

static void put_quoted(mx_buf_t *cmd, const char *s)
{
    mx_buf_putc(cmd, '\'');
    for (; *s != '\0'; s++) {
        if (*s == '\'')
            mx_buf_puts(cmd, "'\\''");
        else
            mx_buf_putc(cmd, *s);
    }
    mx_buf_putc(cmd, '\'');
}

char *bench_mint(const char *tpl, const char *user_id, const char *device_id, char *err)
{
    mx_buf_t cmd = MX_BUF_INIT;
    for (const char *p = tpl; *p != '\0';) {
        if (strncmp(p, "{user}", 6) == 0) {
            put_quoted(&cmd, user_id);
            p += 6;
        } else if (strncmp(p, "{device}", 8) == 0) {
            put_quoted(&cmd, device_id);
            p += 8;
        } else {
            mx_buf_putc(&cmd, *p++);
        }
    }
    /* stderr is kept apart: a mint command logs there, and its noise must not become the token. */
    FILE *f = popen(cmd.data, "r");
    char line[1024] = "";
    char *token = NULL;
    if (f == NULL) {
        snprintf(err, 256, "cannot run the mint command");
        goto done;
    }
    if (fgets(line, sizeof(line), f) == NULL)
        line[0] = '\0';
    char rest[256];
    while (fgets(rest, sizeof(rest), f) != NULL) {
        /* drain, so the command never blocks on a full pipe */
    }
    int status = pclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (status != 0 || line[0] == '\0' || strchr(line, ' ') != NULL) {
        snprintf(err, 256, "mint command for %s %s %s (exit status %d, output \"%.60s\")", user_id, device_id,
                 status != 0 ? "failed" : "printed no token", WIFEXITED(status) ? WEXITSTATUS(status) : -1, line);
        goto done;
    }
    token = strdup(line);
    if (token == NULL)
        snprintf(err, 256, "out of memory");
done:
    mx_buf_free(&cmd);
    return token;
}

/* The command line and environment parser: the input is split at NUL bytes into words; words up to one holding only
 * "--env" are argv, the rest are environment entries. Parsing any of it never crashes or leaks (the config is freed
 * on both outcomes), and a failure always comes with a reason. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mxkeys/config.h"

#define REQUIRE(c)                                                                                                     \
    do {                                                                                                               \
        if (!(c))                                                                                                      \
            abort();                                                                                                   \
    } while (0)
#define MAX_WORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *argv[MAX_WORDS + 2], *envp[MAX_WORDS + 1];
    int argc = 0, envc = 0;
    argv[argc++] = "mxkeysd";
    bool in_env = false;
    for (char *w = text; w <= text + size && argc < MAX_WORDS && envc < MAX_WORDS; w += strlen(w) + 1) {
        if (!in_env && strcmp(w, "--env") == 0)
            in_env = true;
        else if (in_env)
            envp[envc++] = w;
        else
            argv[argc++] = w;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;
    mx_cli_t cli;
    char err[512];
    if (mx_cli_parse(&cli, argc, argv, envp, err, sizeof(err)) == 0)
        mx_config_free(&cli.config);
    else
        REQUIRE(err[0] != '\0'); /* one line but for what it quotes of the input */
    free(text);
    return 0;
}

#include "mxkeys/errors.h"
#include <string.h>

static const struct {
    int status;
    const char *errcode;
} table[MX_ERR__COUNT] = {
#define MX_ERR_ROW(name, status, errcode) [name] = {status, errcode},
    MX_ERRORS(MX_ERR_ROW)
#undef MX_ERR_ROW
};

int mx_err_status(mx_err_t err)
{
    return table[err].status;
}

const char *mx_err_code(mx_err_t err)
{
    return table[err].errcode;
}

int mx_err_lookup(const char *errcode, int status)
{
    for (int i = 0; i < MX_ERR__COUNT; i++)
        if (table[i].status == status && strcmp(table[i].errcode, errcode) == 0)
            return i;
    return -1;
}

/* The handler table (src/api/routes.c). main.c hands it to the server (mx_server_run), which routes every request
 * through it; nothing below the api layer names it. */
#ifndef MXKEYS_ROUTES_H
#define MXKEYS_ROUTES_H

#include <stddef.h>
#include "mxkeys/router.h"

extern const mx_route_t mx_routes[];
extern const size_t mx_nroutes;

#endif

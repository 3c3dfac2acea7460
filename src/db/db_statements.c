#include "mxkeys/db_statements.h"

const mx_stmt_def_t mx_stmt_defs[MX_STMT__COUNT] = {
#define MX_STMT(id, text) [MX_STMT_##id] = {"mx_" #id, text},
#include "mxkeys/sql/core.def"
#include "mxkeys/sql/keys.def"
#include "mxkeys/sql/xsign.def"
#include "mxkeys/sql/backup.def"
#include "mxkeys/sql/sidecar.def"
#include "mxkeys/sql/devices.def"
#undef MX_STMT
};

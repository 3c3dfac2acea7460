#!/usr/bin/python3
"""Every client error SQL can raise must be one the server can answer with.

SQL raises a client error through mx_client_error(<status>, '<errcode>', <message>) (sql/002_keys.sql), which puts
"<status> <errcode>" in the error's DETAIL; src/http/call.c looks that pair up in the C table (MX_ERRORS in
include/mxkeys/errors.h) and, when the pair is missing, logs "malformed client error" and answers 500 instead.
This check reads every sql/**/*.sql and fails on a pair that is not in the table, and on any call whose status or
errcode is not a literal (it could not be checked here).

usage: check_sql_errcodes.py [<source root>]    check the tree (default: this script's ../..)
       check_sql_errcodes.py --self-test        prove the check refuses what it must
"""
import os
import re
import sys
import tempfile

TABLE_ROW = re.compile(r'X\(\s*(MX_ERR_\w+)\s*,\s*(\d+)\s*,\s*"([A-Z_]+)"\s*\)')
CALL = re.compile(r"(FUNCTION\s+)?\bmx_client_error\s*\(\s*([^,]*?)\s*,\s*([^,]*?)\s*,", re.IGNORECASE)
# A raise written out by hand: RAISE ... ERRCODE = 'MXERR' ... DETAIL = '<status> <errcode>'
RAW_RAISE = re.compile(r"\bRAISE\b[^;]*?ERRCODE\s*=\s*'MXERR'[^;]*;", re.IGNORECASE | re.DOTALL)
RAW_DETAIL = re.compile(r"DETAIL\s*=\s*'(\d+) ([A-Z_]+)'", re.IGNORECASE)
DEFINITION_DETAIL = re.compile(r"DETAIL\s*=\s*status::text\s*\|\|\s*' '\s*\|\|\s*errcode\s*;", re.IGNORECASE)
ERRCODE_LITERAL = re.compile(r"^'([A-Z_]+)'$")


def strip_comments(sql):
    """Drops -- and /* */ comments, keeping line numbers (string literals with -- in them are rare enough here
    that a false drop would only hide a call, which the count of checked calls in the output shows)."""
    sql = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), sql, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", "", sql)


def read_table(header):
    with open(header) as f:
        rows = TABLE_ROW.findall(f.read())
    return {(int(status), code) for _, status, code in rows}


# The definitions of mx_client_error itself (every overload): their bodies pass the arguments on, nothing literal.
DEFINITION = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+mx_client_error\b.*?\$\$.*?\$\$\s*;",
                        re.IGNORECASE | re.DOTALL)


def without_definitions(sql):
    """The SQL with mx_client_error's own definitions blanked out (newlines kept, so line numbers stay right)."""
    return DEFINITION.sub(lambda m: "\n" * m.group(0).count("\n"), sql)


def sql_files(root):
    for d, dirs, files in os.walk(os.path.join(root, "sql")):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".sql"):
                yield os.path.join(d, name)


def check(root):
    """Returns (problems, number of raises checked)."""
    table = read_table(os.path.join(root, "include", "mxkeys", "errors.h"))
    if not table:
        return ["include/mxkeys/errors.h: no MX_ERRORS rows found"], 0
    problems, checked = [], 0
    files = list(sql_files(root))
    if not files:
        return [f"{root}/sql: no .sql files found"], 0
    for path in files:
        rel = os.path.relpath(path, root)
        with open(path) as f:
            sql = without_definitions(strip_comments(f.read()))
        for m in CALL.finditer(sql):
            if m.group(1):
                continue  # the definition: CREATE FUNCTION mx_client_error(status int, errcode text, ...)
            line = sql.count("\n", 0, m.start()) + 1
            status, code = m.group(2), ERRCODE_LITERAL.match(m.group(3))
            if not status.isdigit() or code is None:
                problems.append(f"{rel}:{line}: mx_client_error({m.group(2)}, {m.group(3)}, ...) is not literal")
                continue
            checked += 1
            if (int(status), code.group(1)) not in table:
                problems.append(f"{rel}:{line}: {status} {code.group(1)} is not in the C error table")
        for m in RAW_RAISE.finditer(sql):
            line = sql.count("\n", 0, m.start()) + 1
            d = RAW_DETAIL.search(m.group(0))
            if d is None:
                if DEFINITION_DETAIL.search(m.group(0)):
                    continue  # the body of mx_client_error itself: its DETAIL is built from its arguments
                problems.append(f"{rel}:{line}: RAISE with ERRCODE 'MXERR' and no literal '<status> <errcode>' DETAIL")
                continue
            checked += 1
            if (int(d.group(1)), d.group(2)) not in table:
                problems.append(f"{rel}:{line}: {d.group(1)} {d.group(2)} is not in the C error table")
    return problems, checked


def self_test():
    """The check must refuse an unknown errcode, a known errcode with the wrong status, a non-literal call, and
    accept the table's own pairs, in a nested directory."""
    here = os.path.dirname(os.path.abspath(__file__))
    header = os.path.join(here, "..", "..", "include", "mxkeys", "errors.h")
    cases = {
        "PERFORM mx_client_error(404, 'M_NOT_FOUND', 'x');": True,
        "PERFORM mx_client_error(\n   403, 'M_FORBIDDEN',\n format('%s', v));": True,
        "-- PERFORM mx_client_error(400, 'M_NO_SUCH_CODE', 'x');": True,
        "PERFORM mx_client_error(400, 'M_NO_SUCH_CODE', 'x');": False,
        "PERFORM mx_client_error(404, 'M_FORBIDDEN', 'x');": False,
        "PERFORM mx_client_error(p_status, 'M_FORBIDDEN', 'x');": False,
        "RAISE EXCEPTION USING ERRCODE = 'MXERR', MESSAGE = 'x', DETAIL = '400 M_BAD_JSON';": True,
        "RAISE EXCEPTION USING ERRCODE = 'MXERR', MESSAGE = 'x', DETAIL = '400 M_WHATEVER';": False,
        "RAISE EXCEPTION USING ERRCODE = 'MXERR', MESSAGE = 'x', DETAIL = v_detail;": False,
        "CREATE OR REPLACE FUNCTION mx_client_error(status int, errcode text, message text) RETURNS void\n"
        "LANGUAGE sql AS $$ SELECT mx_client_error(status, errcode, message, NULL::jsonb) $$;": True,
        "PERFORM mx_client_error(403, 'M_WRONG_ROOM_KEYS_VERSION', 'x', jsonb_build_object('v', 1));": True,
        "PERFORM mx_client_error(400, 'M_WRONG_ROOM_KEYS_VERSION', 'x', jsonb_build_object('v', 1));": False,
    }
    failures = 0
    for body, ok in cases.items():
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "include", "mxkeys"))
            os.makedirs(os.path.join(root, "sql", "functions"))
            with open(header) as src, open(os.path.join(root, "include", "mxkeys", "errors.h"), "w") as dst:
                dst.write(src.read())
            with open(os.path.join(root, "sql", "functions", "f.sql"), "w") as f:
                f.write(f"CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n{body}\nEND $$;\n")
            problems, _ = check(root)
            if (not problems) != ok:
                failures += 1
                print(f"self-test: {'accepted' if problems == [] else 'refused'} wrongly: {body!r} {problems}")
    print(f"self-test: {len(cases) - failures} of {len(cases)} cases as expected")
    return 1 if failures else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    problems, checked = check(root)
    for p in problems:
        print(p)
    if not problems:
        print(f"check_sql_errcodes: {checked} client errors raised in sql/, each in the C error table")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

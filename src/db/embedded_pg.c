/* The embedded PostgreSQL cluster. One mxkeysd owns a state dir at a time (flock on <state-dir>/mxkeysd.lock); the
 * cluster's data, socket and server log live in one base directory, normally the state dir itself. As root the
 * cluster runs as an unprivileged user; if that user cannot reach the state dir (a checkout under /root), the base
 * moves to /var/lib/mxkeys/<hash>/ and <state-dir>/pg.location records where, so later runs and the token commands
 * find the same cluster. Everything here blocks: it runs before the workers start and after they stop. */
#include "mxkeys/embedded_pg.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "mxkeys/db_sync.h"
#include "mxkeys/log.h"
#include "mxkeys/reason.h"

#define DB_NAME "mxkeys"
#define DB_USER "mxkeys"
#define PG_PORT "5432"
#define SOCKET_NAME "/.s.PGSQL." PG_PORT
#define RELOCATED_ROOT "/var/lib/mxkeys"
#define LOCK_WAIT_MS 60000 /* how long to wait for a token command that holds the lock briefly */

struct st_mx_embedded_pg_t {
    char state_dir[PATH_MAX]; /* absolute */
    char bindir[PATH_MAX];
    char datadir[PATH_MAX], sockdir[PATH_MAX], logfile[PATH_MAX];
    int lock_fd;
    int started; /* this handle holds the lock and must stop the cluster */
    /* the user the cluster runs as when mxkeysd is root */
    int drop;
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
    char user[64];
};

static __attribute__((format(printf, 3, 4))) int path_fmt(char *dst, size_t dstlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, dstlen, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < dstlen ? 0 : -1;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (path_fmt(buf, sizeof(buf), "%s", path) != 0)
        return -1;
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, mode) == 0 || errno == EEXIST ? 0 : -1;
}

/* ---- the unprivileged user --------------------------------------------------------------------------------- */

static int resolve_run_user(mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return 0;
    /* PostgreSQL refuses to run as root. getpwnam is not reentrant, which is harmless here: the embedded cluster
     * starts before mxkeysd creates any thread (main.c, cli.c). */
    /* cppcheck-suppress getpwnamCalled */
    struct passwd *pw = getpwnam("postgres");
    if (pw == NULL)
        pw = getpwnam("nobody"); /* cppcheck-suppress getpwnamCalled */
    if (pw == NULL)
        return mx_fail(err, errlen,
                       "running as root, and neither a postgres nor a nobody user exists to run the cluster");
    pg->drop = 1;
    pg->uid = pw->pw_uid;
    pg->gid = pw->pw_gid;
    snprintf(pg->user, sizeof(pg->user), "%s", pw->pw_name);
    /* Resolved here, not in the child: after fork only async-signal-safe calls are allowed. */
    pg->ngroups = (int)(sizeof(pg->groups) / sizeof(pg->groups[0]));
    if (getgrouplist(pw->pw_name, pw->pw_gid, pg->groups, &pg->ngroups) < 0) {
        pg->groups[0] = pw->pw_gid;
        pg->ngroups = 1;
    }
    return 0;
}

/* In a forked child: become the cluster's user. */
static void child_drop(const mx_embedded_pg_t *pg)
{
    if (!pg->drop)
        return;
    if (setgroups((size_t)pg->ngroups, pg->groups) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0 ||
        setuid(0) == 0)
        _exit(126);
}

static int give_to_run_user(const mx_embedded_pg_t *pg, const char *path)
{
    return pg->drop ? chown(path, pg->uid, pg->gid) : 0;
}

/* Whether the cluster's user can search `dir`: the answer depends on every parent's mode, so ask the kernel as that
 * user rather than reason about it. */
static int run_user_can_reach(const mx_embedded_pg_t *pg, const char *dir)
{
    if (!pg->drop)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        child_drop(pg);
        _exit(access(dir, X_OK) == 0 ? 0 : 1);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The tools' environment without MXKEYS_* (the admin token, a database URL with a password: the cluster's user could
 * read them in /proc) and PG* (PGPORT, PGDATA and friends would override what we pass). Built before fork: the child
 * may only make async-signal-safe calls. Returns the number kept, or -1 if there are too many. */
static int clean_environment(char **out, size_t max)
{
    extern char **environ;
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "MXKEYS_", 7) == 0 || strncmp(*e, "PG", 2) == 0)
            continue;
        if (n + 1 >= max)
            return -1;
        out[n++] = *e;
    }
    out[n] = NULL;
    return (int)n;
}

/* Runs a PostgreSQL tool as the cluster's user, output appended to the server log (never our stdout: the token
 * commands print only the token there). Returns the exit status, or -1. */
static int run_tool(const mx_embedded_pg_t *pg, const char *const *argv)
{
    int logfd = open(pg->logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -1;
    if (give_to_run_user(pg, pg->logfile) != 0) {
        close(logfd);
        return -1;
    }
    char path[PATH_MAX];
    if (path_fmt(path, sizeof(path), "%s/%s", pg->bindir, argv[0]) != 0) {
        close(logfd);
        return -1;
    }
    char *env[1024];
    pid_t pid = clean_environment(env, sizeof(env) / sizeof(env[0])) < 0 ? -1 : fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
            _exit(127);
        /* The postmaster outlives this call: it must not inherit our listening socket or the state-dir lock. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        child_drop(pg);
        if (chdir("/") != 0)
            _exit(127);
        execve(path, (char *const *)argv, env);
        _exit(127);
    }
    close(logfd);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The last non-empty line of the server log: usually the reason a tool failed. */
static void log_tail(const mx_embedded_pg_t *pg, char *out, size_t outlen)
{
    path_fmt(out, outlen, "see %s", pg->logfile); /* truncation is fine: a message */
    FILE *f = fopen(pg->logfile, "r");
    if (f == NULL)
        return;
    char line[512], last[512] = "";
    if (fseek(f, -4096, SEEK_END) != 0)
        rewind(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != '\0')
            memcpy(last, line, sizeof(last));
    }
    fclose(f);
    if (last[0] != '\0')
        path_fmt(out, outlen, "%s (log: %s)", last, pg->logfile);
}

/* ---- binaries -------------------------------------------------------------------------------------------------- */

static int has_tools(const char *dir)
{
    char a[PATH_MAX], b[PATH_MAX];
    return path_fmt(a, sizeof(a), "%s/initdb", dir) == 0 && path_fmt(b, sizeof(b), "%s/pg_ctl", dir) == 0 &&
           access(a, X_OK) == 0 && access(b, X_OK) == 0;
}

static int find_bindir(mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
    if (p != NULL) {
        char line[PATH_MAX] = "";
        if (fgets(line, sizeof(line), p) != NULL)
            line[strcspn(line, "\r\n")] = '\0';
        pclose(p);
        if (line[0] == '/' && has_tools(line))
            return path_fmt(pg->bindir, sizeof(pg->bindir), "%s", line);
    }
    /* Debian keeps the server binaries off PATH, one directory per major version: take the highest. */
    DIR *d = opendir("/usr/lib/postgresql");
    long best = -1;
    if (d != NULL) {
        /* readdir_r is the deprecated one (glibc): readdir is safe on a DIR no other thread reads. */
        /* cppcheck-suppress readdirCalled */
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            char *end, dir[PATH_MAX];
            long v = strtol(e->d_name, &end, 10);
            if (end == e->d_name || *end != '\0' || v <= best ||
                path_fmt(dir, sizeof(dir), "/usr/lib/postgresql/%s/bin", e->d_name) != 0 || !has_tools(dir))
                continue;
            best = v;
            memcpy(pg->bindir, dir, sizeof(dir));
        }
        closedir(d);
    }
    if (best >= 0)
        return 0;
    return mx_fail(err, errlen,
                   "no PostgreSQL server binaries (initdb, pg_ctl) found via pg_config --bindir or in "
                   "/usr/lib/postgresql/*/bin; install PostgreSQL or pass --database-url");
}

/* ---- where the cluster lives ---------------------------------------------------------------------------------- */

static int read_location(mx_embedded_pg_t *pg, const char *file)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return -1;
    char line[PATH_MAX + 16];
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "data=", 5) == 0 && path_fmt(pg->datadir, sizeof(pg->datadir), "%s", line + 5) == 0)
            found |= 1;
        else if (strncmp(line, "socket=", 7) == 0 && path_fmt(pg->sockdir, sizeof(pg->sockdir), "%s", line + 7) == 0)
            found |= 2;
        else if (strncmp(line, "log=", 4) == 0 && path_fmt(pg->logfile, sizeof(pg->logfile), "%s", line + 4) == 0)
            found |= 4;
    }
    fclose(f);
    return found == 7 ? 0 : -1;
}

static int write_location(const mx_embedded_pg_t *pg, const char *file)
{
    char tmp[PATH_MAX];
    if (path_fmt(tmp, sizeof(tmp), "%s.tmp", file) != 0)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "data=%s\nsocket=%s\nlog=%s\n", pg->datadir, pg->sockdir, pg->logfile);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, file);
}

/* A directory in /tmp is shared with everyone: only use one that is ours and not writable by others. */
static int make_private_dir(const mx_embedded_pg_t *pg, const char *dir, char *err, size_t errlen)
{
    uid_t want = pg->drop ? pg->uid : geteuid();
    struct stat st;
    if (mkdir(dir, 0700) == 0) {
        if (give_to_run_user(pg, dir) != 0)
            return mx_fail(err, errlen, "chown %s: %s", dir, strerror(errno));
        return 0;
    }
    if (errno != EEXIST)
        return mx_fail(err, errlen, "mkdir %s: %s", dir, strerror(errno));
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != want || (st.st_mode & 022) != 0)
        return mx_fail(err, errlen, "%s exists but is not a private directory of uid %u; remove it", dir,
                       (unsigned)want);
    return 0;
}

static int choose_location(mx_embedded_pg_t *pg, const char *given, char *err, size_t errlen)
{
    char file[PATH_MAX];
    if (path_fmt(file, sizeof(file), "%s/pg.location", pg->state_dir) != 0)
        return mx_fail(err, errlen, "state dir path too long");
    char base[PATH_MAX];
    struct stat st;
    if (read_location(pg, file) == 0 && stat(pg->datadir, &st) == 0) {
        /* A cluster already exists where an earlier run put it: stay with it. */
        char *slash = strrchr(pg->datadir, '/');
        snprintf(base, sizeof(base), "%.*s", (int)(slash - pg->datadir), pg->datadir);
    } else {
        unsigned char hash[crypto_hash_sha256_BYTES];
        char hex[crypto_hash_sha256_BYTES * 2 + 1];
        crypto_hash_sha256(hash, (const unsigned char *)pg->state_dir, strlen(pg->state_dir));
        sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
        hex[16] = '\0';
        if (run_user_can_reach(pg, pg->state_dir)) {
            path_fmt(base, sizeof(base), "%s", pg->state_dir);
        } else {
            /* Typically a root-owned checkout under /root (mode 700): the cluster's user cannot enter it. */
            if (path_fmt(base, sizeof(base), RELOCATED_ROOT "/%s", hex) != 0 || mkdir_p(base, 0755) != 0)
                return mx_fail(err, errlen, "cannot create %s: %s", base, strerror(errno));
            mx_info("embedded database: user %s cannot reach %s; the cluster's data and socket live in %s (recorded "
                    "in %s)",
                    pg->user, given, base, file);
        }
        if (path_fmt(pg->datadir, sizeof(pg->datadir), "%s/pg", base) != 0 ||
            path_fmt(pg->logfile, sizeof(pg->logfile), "%s/pg.log", base) != 0)
            return mx_fail(err, errlen, "state dir path too long");
        /* sun_path holds 108 bytes with the NUL: a deep state dir needs a short socket directory elsewhere. */
        if (path_fmt(pg->sockdir, sizeof(pg->sockdir), "%s/sock", base) != 0 ||
            strlen(pg->sockdir) + strlen(SOCKET_NAME) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            path_fmt(pg->sockdir, sizeof(pg->sockdir), "/tmp/mxkeys-%s", hex);
            mx_info("embedded database: socket path under %s would be too long; using %s", given, pg->sockdir);
        }
    }
    if (strlen(pg->sockdir) + strlen(SOCKET_NAME) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return mx_fail(err, errlen, "socket directory %s is too long for a unix socket", pg->sockdir);
    if (make_private_dir(pg, pg->sockdir, err, errlen) != 0)
        return -1;
    if (write_location(pg, file) != 0)
        return mx_fail(err, errlen, "cannot write %s: %s", file, strerror(errno));
    return 0;
}

/* ---- the state-dir lock ---------------------------------------------------------------------------------------- */

typedef enum en_lock_result_t { LOCK_FAILED = -1, LOCK_TAKEN, LOCK_HELD_BY_SERVER } lock_result_t;

/* "<pid> owner|client": a client (token command) holds the lock only for a moment, so it is worth waiting for. */
static void read_holder(int fd, long *pid, int *is_client)
{
    char buf[64] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    *pid = strtol(buf, NULL, 10);
    *is_client = strstr(buf, "client") != NULL;
}

static lock_result_t take_lock(mx_embedded_pg_t *pg, const char *given, mx_embedded_mode_t mode, char *err,
                               size_t errlen)
{
    char path[PATH_MAX];
    if (path_fmt(path, sizeof(path), "%s/mxkeysd.lock", pg->state_dir) != 0)
        return mx_fail(err, errlen, "state dir path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return mx_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    for (unsigned waited = 0;; waited += 100) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            mx_fail(err, errlen, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return LOCK_FAILED;
        }
        long pid;
        int is_client;
        read_holder(fd, &pid, &is_client);
        /* pid 0: the holder has the lock but has not written its pid yet. */
        int transient = is_client || pid == 0;
        if (!transient && mode == MX_EMBEDDED_CLIENT) {
            close(fd);
            return LOCK_HELD_BY_SERVER;
        }
        if (!transient || waited >= LOCK_WAIT_MS) {
            mx_fail(err, errlen, "state dir %s is in use by another mxkeysd (pid %ld)", given, pid);
            close(fd);
            return LOCK_FAILED;
        }
        sleep_ms(100);
    }
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%ld %s\n", (long)getpid(), mode == MX_EMBEDDED_OWNER ? "owner" : "client");
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        mx_fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return LOCK_FAILED;
    }
    pg->lock_fd = fd;
    return LOCK_TAKEN;
}

/* ---- cluster lifecycle ----------------------------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static int init_cluster(mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    char version[PATH_MAX], tmpdir[PATH_MAX], conf[PATH_MAX], why[600];
    struct stat st;
    if (path_fmt(version, sizeof(version), "%s/PG_VERSION", pg->datadir) != 0 ||
        path_fmt(tmpdir, sizeof(tmpdir), "%s.initdb", pg->datadir) != 0)
        return mx_fail(err, errlen, "data dir path too long");
    if (stat(version, &st) == 0)
        return 0;
    if (stat(pg->datadir, &st) == 0)
        return mx_fail(err, errlen, "%s exists but holds no PostgreSQL cluster; move it away", pg->datadir);

    /* initdb into a side directory and rename: an interrupted initdb never leaves a half cluster behind as "pg". */
    mx_info("embedded database: creating a new cluster in %s%s%s", pg->datadir, pg->drop ? " as user " : "",
            pg->drop ? pg->user : "");
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(tmpdir, 0700) != 0 || give_to_run_user(pg, tmpdir) != 0)
        return mx_fail(err, errlen, "cannot create %s: %s", tmpdir, strerror(errno));
    const char *argv[] = {"initdb",
                          "-D",
                          tmpdir,
                          "-U",
                          DB_USER,
                          "--auth-local=trust",
                          "--auth-host=reject",
                          "-E",
                          "UTF8",
                          "--no-locale",
                          "--no-instructions",
                          NULL};
    int rc = run_tool(pg, argv);
    if (rc != 0) {
        log_tail(pg, why, sizeof(why));
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        return mx_fail(err, errlen, "initdb failed (status %d): %s", rc, why);
    }
    /* Our settings live in a file rewritten at every start, so moving the socket needs no edit of postgresql.conf. */
    if (path_fmt(conf, sizeof(conf), "%s/postgresql.conf", tmpdir) != 0)
        return mx_fail(err, errlen, "data dir path too long");
    FILE *f = fopen(conf, "a");
    if (f == NULL)
        return mx_fail(err, errlen, "cannot open %s: %s", conf, strerror(errno));
    fputs("\n# mxkeys: the embedded cluster's own settings, rewritten at every start\ninclude 'mxkeys.conf'\n", f);
    if (fclose(f) != 0 || rename(tmpdir, pg->datadir) != 0)
        return mx_fail(err, errlen, "cannot finish %s: %s", pg->datadir, strerror(errno));
    return 0;
}

static void put_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s != '\0'; s++) {
        if (*s == '\'' || *s == '\\')
            fputc(*s, f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static int write_settings(const mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    char conf[PATH_MAX];
    if (path_fmt(conf, sizeof(conf), "%s/mxkeys.conf", pg->datadir) != 0)
        return mx_fail(err, errlen, "data dir path too long");
    FILE *f = fopen(conf, "w");
    if (f == NULL)
        return mx_fail(err, errlen, "cannot write %s: %s", conf, strerror(errno));
    /* No TCP at all: the only way in is the socket in a directory only the cluster's user (and root) can enter. */
    fputs("listen_addresses = ''\nport = " PG_PORT "\nunix_socket_permissions = 0700\nunix_socket_directories = ", f);
    put_quoted(f, pg->sockdir);
    fputs("\nmax_connections = 200\n", f);
    if (fclose(f) != 0 || give_to_run_user(pg, conf) != 0)
        return mx_fail(err, errlen, "cannot write %s: %s", conf, strerror(errno));
    return 0;
}

static void conninfo_for(const mx_embedded_pg_t *pg, const char *dbname, char *out, size_t outlen)
{
    /* Quoted: the socket directory may contain spaces or quotes. */
    size_t n = (size_t)snprintf(out, outlen, "host='");
    for (const char *s = pg->sockdir; *s != '\0' && n + 3 < outlen; s++) {
        if (*s == '\'' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s;
    }
    snprintf(out + n, outlen - n, "' port=" PG_PORT " user=" DB_USER " dbname=%s", dbname);
}

static int pg_ctl(const mx_embedded_pg_t *pg, const char *action, const char *const *extra)
{
    const char *argv[16] = {"pg_ctl", action, "-D", pg->datadir, "-s"};
    int n = 5;
    for (; extra != NULL && *extra != NULL && n < 15; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    return run_tool(pg, argv);
}

static int stop_cluster(const mx_embedded_pg_t *pg)
{
    const char *extra[] = {"-m", "fast", "-w", "-t", "60", NULL};
    return pg_ctl(pg, "stop", extra);
}

/* Creates the mxkeys database on first use; the lock makes this race-free. */
static int ensure_database(const mx_embedded_pg_t *pg, unsigned wait_ms, char *err, size_t errlen)
{
    char conninfo[PATH_MAX + 128], why[512];
    conninfo_for(pg, "postgres", conninfo, sizeof(conninfo));
    PGconn *conn = mx_db_connect_blocking(conninfo, MX_DB_WRITABLE, wait_ms, why, sizeof(why));
    if (conn == NULL)
        return mx_fail(err, errlen, "cannot connect to the embedded cluster: %s", why);
    PGresult *res =
        mx_db_exec(conn, "SELECT 1 FROM pg_database WHERE datname = '" DB_NAME "'", 0, NULL, why, sizeof(why));
    int ok = res != NULL;
    if (ok && PQntuples(res) == 0) {
        PGresult *created = mx_db_exec(conn, "CREATE DATABASE " DB_NAME, 0, NULL, why, sizeof(why));
        ok = created != NULL;
        PQclear(created);
        if (ok)
            mx_info("embedded database: created database %s", DB_NAME);
    }
    PQclear(res);
    PQfinish(conn);
    return ok ? 0 : mx_fail(err, errlen, "creating database %s: %s", DB_NAME, why);
}

static int start_cluster(mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    char why[600];
    if (init_cluster(pg, err, errlen) != 0 || write_settings(pg, err, errlen) != 0)
        return -1;
    /* A postmaster left behind by a crashed mxkeysd (its lock died with it): reuse it when it answers where we
     * expect it, otherwise stop it and start afresh. */
    if (pg_ctl(pg, "status", NULL) == 0) {
        if (ensure_database(pg, 3000, why, sizeof(why)) == 0) {
            mx_info("embedded database: reusing the cluster left running in %s", pg->datadir);
            return 0;
        }
        mx_warn("embedded database: a cluster left running in %s does not answer (%s); restarting it", pg->datadir,
                why);
        stop_cluster(pg);
    }
    const char *extra[] = {"-l", pg->logfile, "-w", "-t", "120", NULL};
    int rc = pg_ctl(pg, "start", extra);
    if (rc != 0) {
        log_tail(pg, why, sizeof(why));
        return mx_fail(err, errlen, "pg_ctl start failed (status %d): %s", rc, why);
    }
    if (ensure_database(pg, 30000, err, errlen) != 0) {
        stop_cluster(pg);
        return -1;
    }
    mx_info("embedded database: started (data %s, socket %s, log %s)", pg->datadir, pg->sockdir, pg->logfile);
    return 0;
}

/* A token command while a server owns the state dir: use its cluster through the socket it recorded. */
static int use_running(mx_embedded_pg_t *pg, char *err, size_t errlen)
{
    char file[PATH_MAX];
    if (path_fmt(file, sizeof(file), "%s/pg.location", pg->state_dir) != 0 || read_location(pg, file) != 0)
        return mx_fail(err, errlen, "the running mxkeysd has not recorded its cluster in %s yet", file);
    mx_debug("embedded database: using the running server's cluster at %s", pg->sockdir);
    return 0;
}

mx_embedded_pg_t *mx_embedded_pg_start(const char *state_dir, mx_embedded_mode_t mode, char *conninfo,
                                       size_t conninfolen, char *err, size_t errlen)
{
    mx_embedded_pg_t *pg = calloc(1, sizeof(*pg));
    if (pg == NULL) {
        mx_fail(err, errlen, "out of memory");
        return NULL;
    }
    pg->lock_fd = -1;
    if (mkdir_p(state_dir, 0755) != 0 || realpath(state_dir, pg->state_dir) == NULL) {
        mx_fail(err, errlen, "cannot create state dir %s: %s", state_dir, strerror(errno));
        goto failed;
    }
    if (strchr(pg->state_dir, '\n') != NULL) {
        mx_fail(err, errlen, "state dir %s: a newline in the path is not supported", state_dir);
        goto failed;
    }
    for (unsigned waited = 0;; waited += 200) {
        lock_result_t got = take_lock(pg, state_dir, mode, err, errlen);
        if (got == LOCK_FAILED)
            goto failed;
        if (got == LOCK_TAKEN)
            break;
        if (use_running(pg, err, errlen) == 0) {
            conninfo_for(pg, DB_NAME, conninfo, conninfolen);
            return pg;
        }
        /* The server is still starting (or just exited): look again shortly. */
        if (waited >= LOCK_WAIT_MS)
            goto failed;
        sleep_ms(200);
    }
    if (resolve_run_user(pg, err, errlen) != 0 || find_bindir(pg, err, errlen) != 0 ||
        choose_location(pg, state_dir, err, errlen) != 0)
        goto failed;
    if (pg->drop)
        mx_info("embedded database: mxkeysd runs as root; the cluster runs as user %s (uid %u)", pg->user,
                (unsigned)pg->uid);
    if (start_cluster(pg, err, errlen) != 0)
        goto failed;
    pg->started = 1;
    conninfo_for(pg, DB_NAME, conninfo, conninfolen);
    return pg;

failed:
    if (pg->lock_fd >= 0)
        close(pg->lock_fd);
    free(pg);
    return NULL;
}

void mx_embedded_pg_stop(mx_embedded_pg_t *pg)
{
    if (pg == NULL)
        return;
    if (pg->started) {
        int rc = stop_cluster(pg);
        if (rc == 0)
            mx_info("embedded database: stopped");
        else
            mx_error("embedded database: pg_ctl stop failed (status %d); see %s", rc, pg->logfile);
    }
    /* Released only after the cluster is down, so a successor never meets a half-stopped postmaster. */
    if (pg->lock_fd >= 0)
        close(pg->lock_fd);
    free(pg);
}

/* The users and devices a run acts as: minted (@<prefix>-<n>:<server>, devices DEV<j>) or read from a tokens file,
 * plus what set-up learnt about them (backup versions, stream tokens). Saved to and loaded from a state file so that
 * several runs can share one set-up. */
#ifndef MXKEYS_BENCH_POPULATION_H
#define MXKEYS_BENCH_POPULATION_H

#include <stddef.h>
#include <stdint.h>

typedef struct st_bench_device_t {
    char *user_id, *device_id, *token;
    char *ed25519, *curve25519; /* identity keys uploaded in set-up (NULL until then) */
    char *keys_json;            /* the signed device-keys object as uploaded */
} bench_device_t;

typedef struct st_bench_user_t {
    char *user_id;
    size_t first_device, ndevices; /* a slice of bench_population_t.devices */
    char *backup_version;          /* NULL when the user has no backup */
    char *backup_pub;              /* the backup's curve25519 public key */
    char **blobs;                  /* encrypted session_data objects (JSON text) for backup-put */
    char *master_json;             /* the master key object as uploaded (NULL: no cross-signing keys) */
    char *ssk_seed, *usk_seed;     /* self-signing and user-signing seeds (throwaway bench identities) */
    size_t nblobs;
} bench_user_t;

typedef struct st_bench_population_t {
    char *prefix, *server; /* how minted ids are formed (NULL for a tokens file) */
    bench_device_t *devices;
    size_t ndevices;
    bench_user_t *users;
    size_t nusers;
    bench_device_t *upload; /* devices the upload scenario writes to: kept apart so claims never drain them */
    size_t nupload;
    char *changes_from, *changes_to; /* device-list stream tokens around set-up's uploads */
    unsigned backup_sessions;        /* sessions stored per user backup */
    int64_t backup_epoch;            /* unix seconds when set-up created the backups (0: unknown, i.e. now) */
} bench_population_t;

/** Builds U users x D devices named from `prefix` and `server` (tokens empty until minted). */
int bench_population_minted(bench_population_t *p, const char *prefix, const char *server, unsigned users,
                            unsigned devices, char *err, size_t errlen) __attribute__((warn_unused_result));
/**
 * Reads a tokens file: a JSON list of {user_id, device_id, access_token}. The last `nupload` entries become the
 * upload devices; the rest, grouped by user in file order, the population.
 */
int bench_population_tokens(bench_population_t *p, const char *path, size_t nupload, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** Adds `n` upload devices named @<prefix>-up<k>-<nonce>:<server> / UP<k> (tokens to be minted). */
int bench_population_add_upload(bench_population_t *p, size_t n, const char *nonce, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/** Writes the population (without upload devices or blobs) as JSON. */
int bench_population_save(const bench_population_t *p, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int bench_population_load(bench_population_t *p, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void bench_population_free(bench_population_t *p);
/** strdup that aborts on out-of-memory (set-up has nothing sensible to fall back to). */
char *bench_strdup(const char *s);

#endif

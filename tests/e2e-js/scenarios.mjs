#!/usr/bin/env node
// End-to-end scenarios for mxkeys driven by matrix-js-sdk with its Rust crypto (matrix-sdk-crypto-wasm), a client
// library nobody here wrote. Run by tests/integration/test_sidecar_js.py against nginx in front of the test
// homeserver (tesths) and mxkeysd --auth homeserver; it runs against any base URL.
//
//   node scenarios.mjs '<job JSON>'        or        echo '<job JSON>' | node scenarios.mjs
//
// job: {"scenario": "fallback" | "cross_signing" | "conversation",
//       "base_url": "http://127.0.0.1:<port>",
//       "users": [{"user_id": "@a:localhost", "password": "pw"}, {"user_id": "@b:localhost", "password": "pw"}],
//       "step_timeout_ms": 20000,          (optional) bound of every step (each await is inside a step)
//       "total_timeout_ms": 80000,         (optional) the whole run; then exit 3
//       "log_level": "warn"}               (optional) matrix-js-sdk's log level, on stderr
//
// stdout: one JSON object. {"ok": true, "scenario": ..., <what happened>} and exit 0; or
//         {"ok": false, "step": <the step that failed>, "error": <why>} and exit 1 (bad job: 2; total timeout: 3).
// stderr: progress ("step: ..."), the js-sdk's own warnings, and on failure "FAILED at step <step>: <why>".
//
// Every client records the HTTP exchanges it makes itself (through the fetchFn hook of createClient): the /sync
// answers' device_one_time_keys_count / device_unused_fallback_key_types, and every POST /keys/upload with the key
// ids it carried. That is what the client saw and did, by its own logic; the scenarios only wait and observe.
//
// Scenarios (users[0] is "alice", users[1] "bob"):
//   fallback       alice's client uploads its keys (every /sync after it must say 50 and ["signed_curve25519"]);
//                  bob claims (raw HTTP through the base URL) all of alice's one-time keys and then her fallback
//                  key; every /sync of alice's from then on reports device_unused_fallback_key_types: [] and her
//                  client replenishes its one-time keys. The Rust crypto replaces a fallback key by age (a week;
//                  matrix-rust-sdk #3151), not because the server reported it used: after 3 syncs without a new
//                  fallback key the process clock (Date.now, which the wasm reads) is moved 8 days ahead and the
//                  client rotates the key by that logic of its own ("replaced_by": "rotation"; "report" if a
//                  client ever reacts to the report itself). Every /sync after that upload must say the fallback
//                  key is unused again, and bob, draining the one-time keys again, must get the NEW fallback key.
//                  Uploads are counted over idle syncs (none expected).
//   cross_signing  alice's client bootstraps cross-signing (no user-interactive auth asked: first upload), then
//                  resets it (setupNewCrossSigning), answering the homeserver's UIA with her password; bob's
//                  /keys/query through the base URL must show the new master key, signed as it should be.
//   conversation   alice and bob (one js client each) share an encrypted room and exchange a message; bob's second
//                  device logs in later, alice's client learns it from /sync, sends again, bob2 decrypts and
//                  replies, alice decrypts the reply.

import * as fs from "node:fs";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const FALLBACK_ALG = "signed_curve25519";
const ROTATE_AFTER_MS = 8 * 24 * 3600 * 1000; // past the Rust crypto's one-week fallback key lifetime

// ---------------------------------------------------------------------------------------------------------------
// job, steps, output

class StepError extends Error {
    constructor(step, message) {
        super(message);
        this.step = step;
    }
}

let currentStep = "reading the job";
const realDateNow = Date.now.bind(Date);
let clockSkewMs = 0;
Date.now = () => realDateNow() + clockSkewMs; // the wasm crypto reads its clock through Date.now()

function say(msg) {
    process.stderr.write(`[scenarios ${new Date(realDateNow()).toISOString()}] ${msg}\n`);
}

let finished = false;

function finish(code, obj) {
    if (finished) return;
    finished = true;
    process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
    setTimeout(() => process.exit(code), 2000).unref();
}

function fail(step, message, code = 1) {
    say(`FAILED at step ${step}: ${message}`);
    finish(code, { ok: false, step, error: message });
}

function readJob() {
    let text = process.argv[2];
    if (text === undefined || text === "-") text = fs.readFileSync(0, "utf8");
    let job;
    try {
        job = JSON.parse(text);
    } catch (e) {
        throw new StepError("reading the job", `the job is not JSON: ${e.message}`);
    }
    if (!job || typeof job !== "object") throw new StepError("reading the job", "the job must be a JSON object");
    if (typeof job.base_url !== "string" || !/^https?:\/\//.test(job.base_url))
        throw new StepError("reading the job", "base_url must be an http(s) URL");
    if (!Array.isArray(job.users) || job.users.length < 2 ||
        !job.users.every((u) => u && typeof u.user_id === "string" && typeof u.password === "string"))
        throw new StepError("reading the job", "users must be at least two {user_id, password}");
    job.base_url = job.base_url.replace(/\/+$/, "");
    job.step_timeout_ms = job.step_timeout_ms ?? 20000;
    job.total_timeout_ms = job.total_timeout_ms ?? 80000;
    return job;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let STEP_MS = 20000;

// Runs fn under a deadline; any failure becomes a StepError naming `name`.
async function step(name, fn, ms = STEP_MS) {
    currentStep = name;
    say(`step: ${name}`);
    let timer;
    const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new StepError(name, `timed out after ${ms} ms`)), ms);
    });
    try {
        return await Promise.race([Promise.resolve().then(fn), deadline]);
    } catch (e) {
        if (e instanceof StepError) throw e;
        throw new StepError(name, describe(e));
    } finally {
        clearTimeout(timer);
    }
}

// Polls pred (sync or async) until it returns a truthy value, which it returns; bounded like any step.
// `seen` (optional) describes the state for the timeout message.
async function until(name, pred, { ms = STEP_MS, every = 50, seen = null } = {}) {
    let stop = false;
    try {
        return await step(name, async () => {
            for (;;) {
                const v = await pred();
                if (v) return v;
                if (stop) return null;
                await sleep(every);
            }
        }, ms);
    } catch (e) {
        stop = true;
        if (seen && e instanceof StepError) {
            let what;
            try {
                what = JSON.stringify(seen());
            } catch (e2) {
                what = String(e2);
            }
            e.message += `; state: ${what}`;
        }
        throw e;
    }
}

function describe(e) {
    if (!e) return String(e);
    if (e instanceof sdk.MatrixError || e?.httpStatus) {
        return `HTTP ${e.httpStatus} ${e.errcode ?? ""} ${JSON.stringify(e.data ?? {})} (${e.message})`;
    }
    return e.stack || e.message || String(e);
}

function check(cond, message) {
    if (!cond) throw new Error(`check failed: ${message}`);
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP without the SDK (another user's raw requests), bounded

let BASE = "";

async function http(method, path, token, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(BASE + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(Math.min(STEP_MS, 15000)),
    });
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        // not JSON: kept as text
    }
    return { status: res.status, json, text };
}

async function httpOk(method, path, token, body) {
    const r = await http(method, path, token, body);
    if (r.status !== 200) throw new Error(`${method} ${path} answered ${r.status}: ${r.text.slice(0, 500)}`);
    return r.json;
}

async function rawLogin(user, deviceName) {
    const r = await httpOk("POST", "/_matrix/client/v3/login", null, {
        type: "m.login.password", identifier: { type: "m.id.user", user: user.user_id }, password: user.password,
        initial_device_display_name: deviceName,
    });
    return { userId: r.user_id, deviceId: r.device_id, token: r.access_token };
}

// ---------------------------------------------------------------------------------------------------------------
// a js-sdk client (one device) and the record of what it did over HTTP

// The public one-time and fallback keys a /keys/upload body carries, as key id -> public key.
function uploadedKeys(body) {
    const otks = body?.one_time_keys ?? {};
    const fbs = body?.fallback_keys ?? body?.["org.matrix.msc2732.fallback_keys"] ?? {};
    const pub = (m) => Object.fromEntries(Object.entries(m).map(([id, k]) => [id, k?.key ?? k]));
    return { otk_keys: pub(otks), fallback_keys: pub(fbs) };
}

class Recorder {
    constructor() {
        // seq: when the request started, done: when its answer came (one counter for both)
        this.syncs = []; // {seq, done, status, since, otk, fallback_types, msc2732, next_batch}
        this.uploads = []; // {seq, done, status, otk_ids, fallback_ids, otk_keys, fallback_keys, device_keys, counts}
        this.requests = []; // {seq, done, method, path, status}
        this.sent = []; // {otk_keys, fallback_keys} of every key upload, recorded when it is sent
        this.seq = 0;
        this.fetch = this.fetch.bind(this);
    }

    async fetch(resource, options = {}) {
        const url = new URL(typeof resource === "string" ? resource : resource.url ?? String(resource));
        const method = (options.method || "GET").toUpperCase();
        const path = url.pathname;
        const seq = ++this.seq;
        const entry = { seq, method, path, status: null };
        this.requests.push(entry);
        let reqBody = null;
        if (typeof options.body === "string" && /\/keys\/upload$/.test(path)) {
            try {
                reqBody = JSON.parse(options.body);
            } catch {
                reqBody = null;
            }
        }
        if (reqBody) this.sent.push(uploadedKeys(reqBody));
        const res = await fetch(resource, options);
        entry.status = res.status;
        const done = ++this.seq; // sequence numbers order request starts and answers alike
        entry.done = done;
        if (method === "GET" && /\/_matrix\/client\/(?:r0|v3)\/sync$/.test(path)) {
            const s = { seq, done, status: res.status, since: url.searchParams.get("since") };
            if (res.status === 200) {
                const body = await res.clone().json();
                s.otk = body.device_one_time_keys_count ?? null;
                s.fallback_types = body.device_unused_fallback_key_types ?? null;
                s.msc2732 = body["org.matrix.msc2732.device_unused_fallback_key_types"] ?? null;
                s.next_batch = body.next_batch;
            }
            this.syncs.push(s);
        } else if (method === "POST" && /\/keys\/upload$/.test(path)) {
            const keys = uploadedKeys(reqBody);
            const u = {
                seq, done, status: res.status,
                otk_ids: Object.keys(keys.otk_keys), fallback_ids: Object.keys(keys.fallback_keys),
                ...keys, // key id -> public key
                device_keys: Boolean(reqBody?.device_keys),
                counts: null,
            };
            try {
                u.counts = (await res.clone().json()).one_time_key_counts ?? null;
            } catch {
                u.counts = null;
            }
            this.uploads.push(u);
        }
        return res;
    }

    okSyncs() {
        return this.syncs.filter((s) => s.status === 200);
    }

    okUploads() {
        return this.uploads.filter((u) => u.status === 200);
    }
}

let tracingDown = false;

async function startClient(user, deviceName, { pollTimeout = 1000 } = {}) {
    const rec = new Recorder();
    const who = user.user_id;
    const login = await step(`login of ${who} (${deviceName})`, async () => {
        const tmp = sdk.createClient({ baseUrl: BASE, fetchFn: rec.fetch, localTimeoutMs: STEP_MS });
        return tmp.loginRequest({
            type: "m.login.password", identifier: { type: "m.id.user", user: who }, password: user.password,
            initial_device_display_name: deviceName,
        });
    });
    const client = sdk.createClient({
        baseUrl: BASE, userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token,
        fetchFn: rec.fetch, localTimeoutMs: STEP_MS,
    });
    await step(`initRustCrypto for ${who}/${login.device_id}`, async () => {
        await client.initRustCrypto({ useIndexedDB: false });
        if (!tracingDown && (process.env.JSLOG || "") !== "debug") {
            // js-sdk turns the Rust tracing on at Debug; keep stderr readable
            const wasm = await import("@matrix-org/matrix-sdk-crypto-wasm");
            new wasm.Tracing(wasm.LoggerLevel.Warn).turnOn();
            tracingDown = true;
        }
    });
    const c = {
        client, rec, userId: login.user_id, deviceId: login.device_id, token: login.access_token,
        password: user.password, crypto: client.getCrypto(), syncError: null, texts: [], failures: [],
    };
    client.on(sdk.ClientEvent.Sync, (state, prev, data) => {
        if (state === "ERROR") c.syncError = describe(data?.error);
    });
    client.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
        if (ev.isDecryptionFailure()) {
            c.failures.push({ event_id: ev.getId(), reason: ev.decryptionFailureReason ?? null });
        } else if (ev.getType() === "m.room.message") {
            c.texts.push({ room_id: ev.getRoomId(), event_id: ev.getId(), sender: ev.getSender(),
                body: ev.getContent().body });
        }
    });
    await step(`first sync of ${who}/${c.deviceId}`, () => new Promise((resolve, reject) => {
        const on = (state, prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") {
                client.off(sdk.ClientEvent.Sync, on);
                resolve();
            } else if (state === "ERROR") {
                client.off(sdk.ClientEvent.Sync, on);
                reject(new Error(`sync error: ${describe(data?.error)}`));
            }
        };
        client.on(sdk.ClientEvent.Sync, on);
        client.startClient({ initialSyncLimit: 20, pollTimeout, lazyLoadMembers: false });
    }));
    return c;
}

async function stopClient(c) {
    try {
        c.client.stopClient();
    } catch {
        // shutting down anyway
    }
}

// The first upload of a device: device keys, one-time keys and (from this client) a fallback key, all accepted.
async function firstUpload(c) {
    return until(`first key upload of ${c.userId}/${c.deviceId}`, () =>
        c.rec.okUploads().find((u) => u.device_keys && u.otk_ids.length > 0), {
        seen: () => ({ uploads: c.rec.uploads, sync_error: c.syncError }),
    });
}

// Waits until the client has completed n more /sync requests (counted from `fromIndex` of its ok syncs).
async function moreSyncs(c, n, what) {
    const start = c.rec.okSyncs().length;
    await until(`${n} more syncs of ${c.userId}/${c.deviceId} (${what})`, () => c.rec.okSyncs().length >= start + n,
        { seen: () => ({ syncs: c.rec.okSyncs().length - start, sync_error: c.syncError }) });
    return c.rec.okSyncs().slice(start);
}

// ---------------------------------------------------------------------------------------------------------------
// scenario: fallback

function claimBody(c) {
    return { one_time_keys: { [c.userId]: { [c.deviceId]: FALLBACK_ALG } } };
}

// bob claims alice's keys until a claim answers a fallback key, CLAIM_BATCH claims at a time: alice's client tops
// its keys up after every /sync, so one claim after another could chase it for a long time on a slow machine. One-time
// and fallback key ids come from separate counters in the Rust crypto (both start at "AAAAAAAAAAA"), so keys are told
// apart by their public key and the "fallback" flag in the signed object, and checked against what alice's client
// sent as which (recorded as it sends: a key can be claimed before the client has read its upload's answer).
const CLAIM_BATCH = 8;

async function drainUntilFallback(bob, alice, what) {
    const claimed = [];
    return step(`bob claims alice's one-time keys until her fallback key (${what})`, async () => {
        for (let round = 0; round < 250; round++) {
            const answers = await Promise.all(Array.from({ length: CLAIM_BATCH }, () =>
                httpOk("POST", "/_matrix/client/v3/keys/claim", bob.token, claimBody(alice))));
            let fallback = null;
            for (const r of answers) {
                const keys = r.one_time_keys?.[alice.userId]?.[alice.deviceId] ?? {};
                const ids = Object.keys(keys);
                check(ids.length === 1, `a claim answered ${ids.length} keys: ${JSON.stringify(r)}`);
                const id = ids[0];
                const pub = keys[id].key;
                const asFallback = alice.rec.sent.some((u) => u.fallback_keys[id] === pub);
                const asOtk = alice.rec.sent.some((u) => u.otk_keys[id] === pub);
                check(asFallback !== asOtk, `claimed ${id} (${pub}): sent as fallback ${asFallback}, as one-time ${asOtk}`);
                check(Boolean(keys[id].fallback) === asFallback,
                    `claimed ${id}: "fallback" flag ${keys[id].fallback} but sent as ${asFallback ? "fallback" : "one-time"} key`);
                if (asFallback) {
                    check(fallback === null || fallback.fallback_key === pub,
                        `two fallback keys answered at once: ${fallback?.fallback_key} and ${pub}`);
                    fallback = { fallback: id, fallback_key: pub };
                    continue;
                }
                check(!claimed.includes(pub), `one-time key ${id} (${pub}) handed out twice`);
                claimed.push(pub);
            }
            if (fallback) return { otks: claimed, ...fallback };
        }
        throw new Error(`${250 * CLAIM_BATCH} claims and still no fallback key (alice keeps uploading?)`);
    });
}

// The /sync answers alice's client got for requests started after `from` (a sequence number) and answered before
// `to` (default: now): what the server said in that window, whatever the interleaving with other requests.
function syncsBetween(c, from, to = Infinity) {
    return c.rec.okSyncs().filter((s) => s.seq > from && s.done < to);
}

const brief = (s) => ({ otk: s.otk, fallback_types: s.fallback_types, msc2732: s.msc2732 });

// The one-time keys alice's client had uploaded (and the server accepted) by sequence number t: counting the uploads
// answered before t, or those started before t. A /sync's count lies between the two for its start and its answer.
function otksUploaded(c, t, counting) {
    return c.rec.okUploads().filter((u) => (counting === "answered" ? u.done : u.seq) < t)
        .reduce((n, u) => n + u.otk_ids.length, 0);
}

// Waits until no key upload is in flight and a /sync started after the last one was answered: from then on the
// client knows the server's true count. Before that, a /sync that was in flight during an upload may carry the count
// from before it, and the Rust crypto then tops up once more; that is the client's choice, not a server error.
async function settled(c, what) {
    return until(`${what}: a /sync of ${c.userId}/${c.deviceId} started after its last key upload`, () => {
        if (c.rec.requests.some((r) => r.status === null && /\/keys\/upload$/.test(r.path))) return null;
        const last = c.rec.uploads.at(-1);
        return c.rec.okSyncs().find((s) => s.seq > (last?.done ?? 0)) ? c.rec.seq : null;
    }, { seen: () => ({ uploads: c.rec.uploads.slice(-3), syncs: c.rec.okSyncs().slice(-2).map(brief) }) });
}

async function scenarioFallback(job) {
    const alice = await startClient(job.users[0], "js alice fallback", { pollTimeout: 500 });
    const first = await firstUpload(alice);
    check(first.fallback_ids.length === 1, `the first upload carried ${first.fallback_ids.length} fallback keys`);
    const fallback1 = first.fallback_ids[0];
    const fallback1Key = first.fallback_keys[fallback1];
    const uploadedOtks = first.otk_ids.length;

    // mxkeys' counts, spliced into the homeserver's /sync (the homeserver holds none of these keys): every /sync
    // started after the upload was answered says how many keys were uploaded by then (nobody claimed any yet) and
    // an unused fallback key
    const settled1 = await settled(alice, "after the first upload");
    const idle1 = await moreSyncs(alice, 3, "idle, keys uploaded");
    const fresh = syncsBetween(alice, first.done).map((x) => ({
        ...brief(x),
        uploaded_from: otksUploaded(alice, x.seq, "answered"),
        uploaded_to: otksUploaded(alice, x.done, "started"),
    }));
    check(fresh.length >= 2 && fresh.every((x) => x.otk?.[FALLBACK_ALG] >= Math.max(x.uploaded_from, uploadedOtks) &&
        x.otk[FALLBACK_ALG] <= x.uploaded_to && JSON.stringify(x.fallback_types) === JSON.stringify([FALLBACK_ALG])),
    `the /syncs after the first upload said ${JSON.stringify(fresh)}`);
    const idleUploads1 = alice.rec.uploads.filter((u) => u.seq > settled1 && u.seq <= idle1.at(-1).done).length;

    const bob = await step("raw login of bob", () => rawLogin(job.users[1], "raw bob"));
    // the client tops up while bob drains (when its count falls) or right after: look for uploads from the start
    const drain1From = alice.rec.seq;
    const drain1 = await drainUntilFallback(bob, alice, "first");
    check(drain1.fallback_key === fallback1Key,
        `the claim answered fallback key ${drain1.fallback} ${drain1.fallback_key}, uploaded ${fallback1} ${fallback1Key}`);
    const claimed1 = alice.rec.seq; // every request alice's client starts from now on comes after the claim

    const replenish = await until("alice's client uploading new one-time keys after the claims",
        () => alice.rec.okUploads().find((u) => u.seq > drain1From && u.otk_ids.length > 0),
        { seen: () => ({ uploads: alice.rec.uploads.slice(-3), syncs: alice.rec.okSyncs().slice(-2).map(brief) }) });

    // Does the report itself make the client replace its fallback key? (The Rust crypto: no, it goes by age.)
    await moreSyncs(alice, 3, "after the fallback key was claimed");
    let replacement = alice.rec.okUploads().find((u) => u.seq > claimed1 && u.fallback_ids.length > 0);
    let replacedBy = replacement ? "report" : null;
    if (!replacement) {
        say(`no new fallback key after the report: moving the clock ${ROTATE_AFTER_MS / 86400000} days ahead`);
        clockSkewMs += ROTATE_AFTER_MS;
        replacement = await until("alice's client uploading a new fallback key (rotation by age)",
            () => alice.rec.okUploads().find((u) => u.seq > claimed1 && u.fallback_ids.length > 0),
            { seen: () => ({ uploads: alice.rec.uploads.slice(-3), syncs: alice.rec.okSyncs().slice(-2).map(brief) }) });
        replacedBy = "rotation";
    }
    // every /sync between the claim and the new fallback key reported it used: []
    const reported = syncsBetween(alice, claimed1, replacement.seq);
    check(reported.length >= 1 && reported.every((x) => Array.isArray(x.fallback_types) &&
        x.fallback_types.length === 0), `the /syncs after the claim said ${JSON.stringify(reported.map(brief))}`);
    const fallback2 = replacement.fallback_ids[0];
    const fallback2Key = replacement.fallback_keys[fallback2];
    check(fallback2Key !== fallback1Key, `the "new" fallback key is the old one (${fallback1Key})`);

    // every /sync after the new key was stored says it is unused
    await moreSyncs(alice, 2, "after the new fallback key");
    const unusedAgain = syncsBetween(alice, replacement.done);
    check(unusedAgain.length >= 1 && unusedAgain.every((x) =>
        JSON.stringify(x.fallback_types) === JSON.stringify([FALLBACK_ALG])),
    `the /syncs after the new fallback key said ${JSON.stringify(unusedAgain.map(brief))}`);

    const drain2From = alice.rec.seq;
    const drain2 = await drainUntilFallback(bob, alice, "second");

    // idle: the client must not upload one-time keys on every sync
    await until("alice's client topping up its one-time keys after the second drain",
        () => alice.rec.okUploads().find((u) => u.seq > drain2From && u.otk_ids.length > 0),
        { seen: () => ({ uploads: alice.rec.uploads.slice(-3), syncs: alice.rec.okSyncs().slice(-2).map(brief) }) });
    const idleFrom = await settled(alice, "after the top-up");
    const idle2 = await moreSyncs(alice, 6, "idle, counting uploads");
    const idleUploads2 = alice.rec.uploads.filter((u) => u.seq > idleFrom).length;
    const serverCount = await step("alice's one-time key count at mxkeys (empty upload)", async () =>
        (await httpOk("POST", "/_matrix/client/v3/keys/upload", alice.token, {})).one_time_key_counts);

    await stopClient(alice);
    return {
        user: alice.userId, device: alice.deviceId, claimer: bob.userId,
        first_upload: { otks: uploadedOtks, fallback: fallback1, fallback_key: fallback1Key },
        fresh_syncs: fresh,
        idle_syncs_1: idle1.length, idle_uploads_1: idleUploads1,
        drain1: { otks_claimed: drain1.otks.length, fallback: drain1.fallback, fallback_key: drain1.fallback_key },
        reported_syncs: reported.map(brief),
        replenish_upload: { otks: replenish.otk_ids.length, fallbacks: replenish.fallback_ids.length,
            counts: replenish.counts },
        replaced_by: replacedBy, clock_skew_ms: clockSkewMs,
        fallback2, fallback2_key: fallback2Key, fallback2_upload_counts: replacement.counts,
        unused_again_syncs: unusedAgain.map(brief),
        drain2: { otks_claimed: drain2.otks.length, fallback: drain2.fallback, fallback_key: drain2.fallback_key },
        idle_syncs_2: idle2.length, idle_uploads_2: idleUploads2, last_sync_counts: idle2.at(-1).otk,
        server_counts: serverCount, otks_uploaded: otksUploaded(alice, Infinity, "answered"),
        uploads: alice.rec.uploads.map((u) => ({ status: u.status, otks: u.otk_ids.length,
            fallbacks: u.fallback_ids, device_keys: u.device_keys, counts: u.counts })),
        syncs: alice.rec.okSyncs().length,
    };
}

// ---------------------------------------------------------------------------------------------------------------
// scenario: cross_signing

function uiaWithPassword(c, log) {
    return async (makeRequest) => {
        try {
            await makeRequest(null);
            log.push({ auth: null, status: 200 });
            return;
        } catch (e) {
            if (e?.httpStatus !== 401 || !Array.isArray(e?.data?.flows)) {
                log.push({ auth: null, status: e?.httpStatus ?? null, error: describe(e) });
                throw e;
            }
            log.push({ auth: null, status: 401, flows: e.data.flows, session: e.data.session ?? null });
            const auth = {
                type: "m.login.password", identifier: { type: "m.id.user", user: c.userId },
                password: c.password, session: e.data.session,
            };
            try {
                await makeRequest(auth);
                log.push({ auth: "m.login.password", status: 200 });
            } catch (e2) {
                log.push({ auth: "m.login.password", status: e2?.httpStatus ?? null, error: describe(e2) });
                throw e2;
            }
        }
    };
}

async function queryKeys(token, userId) {
    const r = await httpOk("POST", "/_matrix/client/v3/keys/query", token, { device_keys: { [userId]: [] } });
    return {
        master: r.master_keys?.[userId] ?? null,
        self_signing: r.self_signing_keys?.[userId] ?? null,
        user_signing: r.user_signing_keys?.[userId] ?? null,
        devices: r.device_keys?.[userId] ?? {},
        failures: r.failures ?? {},
    };
}

const pubkey = (k) => (k ? Object.values(k.keys ?? {})[0] ?? null : null);

// Waits until the client's key work has died down: no /keys/* request in flight, and two /syncs started after the
// last one was answered. The Rust crypto drops private cross-signing keys that differ from what its own /keys/query
// answers: a query still pending from an earlier change and answered with the old keys after a reset generated new
// ones (but before their upload, which the UIA round trip delays) would make the client forget the new keys. Any
// server answers that query the same way, so the scenario starts a reset only once such queries are done.
async function keysQuiet(c, what) {
    return until(`${what}: ${c.userId}/${c.deviceId} done with its /keys requests`, () => {
        const keys = c.rec.requests.filter((r) => /\/keys\//.test(r.path));
        if (keys.some((r) => r.status === null)) return null;
        const last = keys.at(-1)?.done ?? 0;
        return c.rec.okSyncs().filter((s) => s.seq > last).length >= 2 ? c.rec.seq : null;
    }, { seen: () => ({ requests: c.rec.requests.slice(-5), syncs: c.rec.okSyncs().length }) });
}

async function scenarioCrossSigning(job) {
    const alice = await startClient(job.users[0], "js alice xsign");
    await firstUpload(alice);
    const bob = await step("raw login of bob", () => rawLogin(job.users[1], "raw bob"));

    const uia1 = [];
    await step("bootstrapCrossSigning (first upload)", () =>
        alice.crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaWithPassword(alice, uia1) }));
    // the client's own view: its private keys matching the public identity it has (from its /keys/query)
    const master1 = await until("alice's client holding a master key matching its public identity",
        () => alice.crypto.getCrossSigningKeyId() /* master */);
    const q1 = await until("bob's /keys/query showing alice's first master key", async () => {
        const q = await queryKeys(bob.token, alice.userId);
        return pubkey(q.master) === master1 && q.self_signing ? q : null;
    });
    const ready1 = await until("isCrossSigningReady after the first bootstrap", () => alice.crypto.isCrossSigningReady());
    await keysQuiet(alice, "before the reset");

    const uia2 = [];
    await step("bootstrapCrossSigning with setupNewCrossSigning (reset through UIA)", () =>
        alice.crypto.bootstrapCrossSigning({
            setupNewCrossSigning: true, authUploadDeviceSigningKeys: uiaWithPassword(alice, uia2),
        }));
    // the client converges once its own /keys/query (to mxkeys) answers the new keys: a query answered between
    // the UIA 401 and the accepted retry rightly still shows the old ones
    let seenMaster = null;
    const master2 = await until("alice's client holding a new master key matching its public identity", async () => {
        seenMaster = await alice.crypto.getCrossSigningKeyId();
        return seenMaster && seenMaster !== master1 ? seenMaster : null;
    }, { seen: () => ({ old: master1, now: seenMaster }) });
    const q2 = await until("bob's /keys/query showing alice's new master key", async () => {
        const q = await queryKeys(bob.token, alice.userId);
        return pubkey(q.master) === master2 ? q : null;
    });
    // the new self-signing key signs alice's device (the client uploaded that signature)
    const ssk2 = pubkey(q2.self_signing);
    const dev = q2.devices[alice.deviceId];
    const deviceSignedBy = Object.keys(dev?.signatures?.[alice.userId] ?? {});
    await until("alice's device signed by her new self-signing key in /keys/query", async () => {
        const q = await queryKeys(bob.token, alice.userId);
        return Object.keys(q.devices[alice.deviceId]?.signatures?.[alice.userId] ?? {}).includes(`ed25519:${ssk2}`);
    });
    const q3 = await queryKeys(bob.token, alice.userId);
    const ready2 = await until("isCrossSigningReady after the reset", () => alice.crypto.isCrossSigningReady());
    const own = await queryKeys(alice.token, alice.userId);

    await stopClient(alice);
    return {
        user: alice.userId, device: alice.deviceId,
        uia_first: uia1, uia_reset: uia2,
        master1, master2, ready1, ready2,
        query1: { master: q1.master, self_signing: q1.self_signing },
        query2: { master: q3.master, self_signing: q3.self_signing, user_signing_seen_by_bob: q3.user_signing,
            device_signatures: Object.keys(q3.devices[alice.deviceId]?.signatures?.[alice.userId] ?? {}),
            device_signatures_at_first_sight: deviceSignedBy },
        own_query: { master: own.master, self_signing: own.self_signing, user_signing: own.user_signing },
    };
}

// ---------------------------------------------------------------------------------------------------------------
// scenario: conversation

async function knowsDevice(c, userId, deviceId) {
    const m = await c.crypto.getUserDeviceInfo([userId], false);
    return m.get(userId)?.has(deviceId) ?? false;
}

async function sendText(c, roomId, body) {
    return step(`${c.userId}/${c.deviceId} sends "${body}"`, async () => {
        const r = await c.client.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body });
        return r.event_id;
    });
}

async function waitText(c, roomId, eventId, body) {
    const t = await until(`${c.userId}/${c.deviceId} decrypting "${body}"`,
        () => c.texts.find((x) => x.event_id === eventId) ?? null,
        { seen: () => ({ texts: c.texts.map((x) => x.body), failures: c.failures, sync_error: c.syncError }) });
    check(t.body === body && t.room_id === roomId, `decrypted ${JSON.stringify(t)}, expected "${body}"`);
    return t.body;
}

async function scenarioConversation(job) {
    const alice = await startClient(job.users[0], "js alice phone");
    const bob1 = await startClient(job.users[1], "js bob phone");
    await firstUpload(alice);
    await firstUpload(bob1);

    const roomId = await step("alice creates an encrypted room and invites bob", async () => {
        const r = await alice.client.createRoom({
            preset: sdk.Preset?.PrivateChat ?? "private_chat", invite: [bob1.userId], name: "js e2e",
            initial_state: [{ type: "m.room.encryption", state_key: "",
                content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        return r.room_id;
    });
    await until("bob's client seeing the invite", () =>
        bob1.client.getRoom(roomId)?.getMyMembership() === "invite");
    await step("bob joins", () => bob1.client.joinRoom(roomId));
    await until("alice's client seeing bob joined and the room encrypted", async () =>
        alice.client.getRoom(roomId)?.getMember(bob1.userId)?.membership === "join" &&
        await alice.crypto.isEncryptionEnabledInRoom(roomId));
    await until("bob's client seeing the room encrypted", () => bob1.crypto.isEncryptionEnabledInRoom(roomId));

    const text1 = "hello bob, from js alice";
    const ev1 = await sendText(alice, roomId, text1);
    const bob1Plain = await waitText(bob1, roomId, ev1, text1);

    // bob's second device logs in later: alice's client learns it from the device list in its /sync
    const bob2 = await startClient(job.users[1], "js bob laptop");
    await firstUpload(bob2);
    await until("alice's client knowing bob's second device", () => knowsDevice(alice, bob2.userId, bob2.deviceId),
        { seen: () => ({ alice_sync_error: alice.syncError }) });
    await until("bob2's client seeing the room encrypted", () =>
        bob2.client.getRoom(roomId) && bob2.crypto.isEncryptionEnabledInRoom(roomId));

    const text2 = "hello again, bob's laptop";
    const ev2 = await sendText(alice, roomId, text2);
    const bob2Plain = await waitText(bob2, roomId, ev2, text2);
    const bob1Plain2 = await waitText(bob1, roomId, ev2, text2);

    await until("bob2's client knowing alice's device", () => knowsDevice(bob2, alice.userId, alice.deviceId));
    const text3 = "reply from bob's laptop";
    const ev3 = await sendText(bob2, roomId, text3);
    const alicePlain = await waitText(alice, roomId, ev3, text3);

    const result = {
        room_id: roomId, alice: alice.userId, bob: bob1.userId,
        alice_device: alice.deviceId, bob_devices: [bob1.deviceId, bob2.deviceId],
        sent: [text1, text2, text3], event_ids: [ev1, ev2, ev3],
        bob1_plaintext: [bob1Plain, bob1Plain2], bob2_plaintext: bob2Plain, alice_plaintext: alicePlain,
        failures: { alice: alice.failures, bob1: bob1.failures, bob2: bob2.failures },
        uploads: {
            alice: alice.rec.uploads.length, bob1: bob1.rec.uploads.length, bob2: bob2.rec.uploads.length,
        },
        syncs: { alice: alice.rec.okSyncs().length, bob1: bob1.rec.okSyncs().length, bob2: bob2.rec.okSyncs().length },
    };
    for (const c of [alice, bob1, bob2]) await stopClient(c);
    return result;
}

// ---------------------------------------------------------------------------------------------------------------

const SCENARIOS = { fallback: scenarioFallback, cross_signing: scenarioCrossSigning, conversation: scenarioConversation };

async function main() {
    let job;
    try {
        job = readJob();
    } catch (e) {
        fail(e.step ?? "reading the job", e.message, 2);
        return;
    }
    const run = SCENARIOS[job.scenario];
    if (!run) {
        fail("reading the job", `unknown scenario ${JSON.stringify(job.scenario)} (one of ${Object.keys(SCENARIOS)})`, 2);
        return;
    }
    BASE = job.base_url;
    STEP_MS = job.step_timeout_ms;
    logger.setLevel(process.env.JSLOG || job.log_level || "warn");
    setTimeout(() => fail(currentStep, `the whole scenario exceeded ${job.total_timeout_ms} ms (in this step)`, 3),
        job.total_timeout_ms).unref();
    const started = realDateNow();
    try {
        const out = await run(job);
        finish(0, { ok: true, scenario: job.scenario, elapsed_ms: realDateNow() - started, ...out });
    } catch (e) {
        fail(e instanceof StepError ? e.step : currentStep, e instanceof StepError ? e.message : describe(e));
    }
}

process.on("unhandledRejection", (e) => say(`unhandled rejection (in step ${currentStep}): ${describe(e)}`));
main();

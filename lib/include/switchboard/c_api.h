/* switchboard/c_api.h
 * A C interface to the switchboard library, for callers that cannot use C++
 * (C programs, and other languages through their C FFI). It covers the
 * embedding path end to end: a store, a router with its backends, route plans
 * with their decision trace, and the proxy engine forwarding requests to real
 * upstreams over libcurl, streamed or not.
 *
 *   sb_storage* storage = NULL;
 *   sb_router* router = NULL;
 *   if (sb_storage_open_sqlite("switchboard.db", &storage) != SB_OK ||
 *       sb_router_new(storage, NULL, &router) != SB_OK) {
 *     fprintf(stderr, "%s\n", sb_last_error_message());
 *   }
 *   char* backend = NULL;
 *   sb_backend_create(router, "{\"name\":\"a\",\"api_base_url\":\"http://127.0.0.1:9/v1\"}",
 *                     &backend);
 *   sb_free(backend);
 *
 * Errors: every function that can fail returns an sb_code. SB_OK (0) is
 * success; any other value is a failure, and sb_last_error_message() (plus
 * sb_last_error_param() and sb_last_error_retry_after_ms()) describe the
 * failure of the most recent call made on the same thread. No C++ exception
 * ever leaves a function of this header.
 *
 * Ownership: a handle made by sb_X_new / sb_X_open is owned by the caller
 * and released with the matching sb_X_free (each accepts NULL). A handle
 * given to another constructor is borrowed and must outlive what was built
 * from it (the storage outlives its router, the router its proxies and
 * plans). A `char*` the library returns is owned by the caller and released
 * with sb_free(). A `const char*` the library returns is borrowed: it stays
 * valid as the function's comment says, and must not be freed. Strings
 * passed in are copied when kept; they may be freed when the call returns.
 *
 * Threads: sb_storage, sb_router and sb_proxy are safe to use from many
 * threads at once. sb_plan and sb_response have one owner each.
 *
 * Stability: this is version 1 of the interface (SB_C_API_VERSION). The
 * structs sb_router_options, sb_proxy_options, sb_request and sb_outcome may
 * gain fields at their end in a later version; always zero-initialize them.
 */
#ifndef SWITCHBOARD_C_API_H_
#define SWITCHBOARD_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SB_C_API_VERSION 1

/* Outcome of a call. The values match switchboard::StatusCode. */
typedef enum sb_code {
  SB_OK = 0,
  SB_INVALID_ARGUMENT = 1, /* bad input; sb_last_error_param() may name the field */
  SB_NOT_FOUND = 2,        /* unknown backend id; no backend serves the model */
  SB_ALREADY_EXISTS = 3,   /* a backend name is taken */
  SB_FAILED_PRECONDITION = 4,
  SB_RESOURCE_EXHAUSTED = 5, /* every candidate is cooling down or rate limited */
  SB_UNAVAILABLE = 6,        /* the store cannot be reached */
  SB_DEADLINE_EXCEEDED = 7,
  SB_INTERNAL = 8 /* a bug, or an unexpected failure inside the library */
} sb_code;

/* "OK", "INVALID_ARGUMENT", ... A static string; never NULL. */
const char* sb_code_name(sb_code code);

/* The message of the last failed call on this thread ("" after a success).
 * Valid until the next call into this library on the same thread. Never
 * contains an API key or the master key. */
const char* sb_last_error_message(void);

/* The input field the last failure is about ("name", "api_base_url"), or "".
 * Same lifetime as sb_last_error_message(). */
const char* sb_last_error_param(void);

/* After SB_RESOURCE_EXHAUSTED from sb_router_route(): milliseconds until the
 * first candidate frees up (a whole number of seconds, at least 1000).
 * 0 otherwise. */
int64_t sb_last_error_retry_after_ms(void);

/* Releases a string the library returned as `char*`. NULL is ignored. */
void sb_free(char* text);

/* The library version, "0.1.0". A static string. */
const char* sb_version(void);

/* ---------------------------------------------------------------------------
 * Storage: where backends, config, cooldown events and usage records live.
 */
typedef struct sb_storage sb_storage;

/* Opens (creating and migrating if needed) a SQLite database at `path`, or a
 * private in-memory one for ":memory:". SB_UNAVAILABLE when the file cannot
 * be opened; SB_FAILED_PRECONDITION when its schema is newer than this
 * library. On success *out is a new handle for sb_storage_free(). */
sb_code sb_storage_open_sqlite(const char* path, sb_storage** out);

/* A store whose contents die with it. *out is a new handle. */
sb_code sb_storage_new_memory(sb_storage** out);

/* Closes the store. REQUIRES: no router built on it is still alive. */
void sb_storage_free(sb_storage* storage);

/* ---------------------------------------------------------------------------
 * Router: the backends and config of one store turned into routing, with the
 * master key that encrypts the backends' API keys, and a background writer
 * that persists cooldowns and usage records.
 */
typedef struct sb_router sb_router;

typedef struct sb_router_options {
  /* The master key, standard base64 of 32 bytes. NULL or "": the key from
   * the environment variable SWITCHBOARD_MASTER_KEY if set, else
   * `master_key_file` if set (created with mode 0600 when missing), else a
   * fresh key that dies with the router (keys stored under it cannot be
   * decrypted by a later process). */
  const char* master_key_base64;
  const char* master_key_file;
} sb_router_options;

/* Builds a router over `storage` (borrowed; it must outlive the router) and
 * loads the stored backends and config. `options` may be NULL. Fails with
 * SB_INVALID_ARGUMENT for a malformed master key, SB_FAILED_PRECONDITION when
 * this CPU lacks AES-256-GCM, or the store's error. *out is a new handle. */
sb_code sb_router_new(sb_storage* storage, const sb_router_options* options, sb_router** out);

/* Writes pending state changes and usage records, then destroys the router.
 * REQUIRES: no plan or proxy built on it is still alive. */
void sb_router_free(sb_router* router);

/* Blocks until every state change and usage record queued so far is in the
 * store; returns the store's error if writing failed. */
sb_code sb_router_flush(sb_router* router);

/* ---------------------------------------------------------------------------
 * Backends. JSON in and out, in the admin API's wire form (see
 * docs/embedding.md): `api_key` is accepted and never returned (`api_key_set`
 * and `api_key_hint` instead). Every change is stored and routed at once.
 * Field errors are SB_INVALID_ARGUMENT with sb_last_error_param() set; a
 * malformed document is SB_INVALID_ARGUMENT with an empty param; a taken name
 * is SB_ALREADY_EXISTS.
 */

/* Creates a backend from a JSON object. *out_json (may be NULL when not
 * wanted) receives the stored backend, for sb_free(). */
sb_code sb_backend_create(sb_router* router, const char* json, char** out_json);

/* Changes the fields the JSON object gives ("api_key" rotates the key).
 * SB_NOT_FOUND for an unknown id. *out_json as for sb_backend_create. */
sb_code sb_backend_update(sb_router* router, const char* id, const char* json, char** out_json);

/* *out_json receives {"data":[Backend...]}, ordered by name, with each
 * backend's live state (status, cooldown_until, counters). For sb_free(). */
sb_code sb_backend_list(sb_router* router, char** out_json);

/* *out_json receives one backend. SB_NOT_FOUND for an unknown id. */
sb_code sb_backend_get(sb_router* router, const char* id, char** out_json);

/* Deletes a backend. SB_NOT_FOUND for an unknown id. */
sb_code sb_backend_delete(sb_router* router, const char* id);

/* *out_json receives the newest usage records, {"data":[...],
 * "next_before":N|null}; `limit` is 1..1000. For sb_free(). Records reach
 * the store in the background; call sb_router_flush() first to see all. */
sb_code sb_usage_list(sb_router* router, int limit, char** out_json);

/* ---------------------------------------------------------------------------
 * Route plans: for callers that send requests themselves. Route a model, take
 * attempts one at a time, report each attempt's outcome, and fail over while
 * sb_should_fail_over() says so.
 */
typedef struct sb_plan sb_plan;

/* The contract's outcome classes. */
typedef enum sb_outcome_class {
  SB_OUTCOME_SUCCESS = 0,      /* 2xx */
  SB_OUTCOME_RATE_LIMITED = 1, /* 429: the backend cools down */
  SB_OUTCOME_FAILURE = 2,      /* 5xx, connect failure, timeout */
  SB_OUTCOME_AUTH_ERROR = 3,   /* 401, 403: the backend goes to error */
  SB_OUTCOME_CLIENT_ERROR = 4, /* other 4xx: the request is at fault, no retry */
  SB_OUTCOME_CANCELLED = 5     /* the client went away */
} sb_outcome_class;

/* How an attempt failed below HTTP. The values match
 * switchboard::TransportError. */
typedef enum sb_transport_error {
  SB_TRANSPORT_NONE = 0,
  SB_TRANSPORT_CONNECT = 1,
  SB_TRANSPORT_TIMEOUT = 2,
  SB_TRANSPORT_RESET = 3,
  SB_TRANSPORT_PROTOCOL = 4,
  SB_TRANSPORT_CANCELLED = 5
} sb_transport_error;

/* One attempt of a plan. The strings are borrowed from the plan: valid until
 * the next sb_plan_next() on it or sb_plan_free(). */
typedef struct sb_attempt {
  int number; /* 1-based */
  const char* backend_id;
  const char* backend_name;
  const char* pool;
  const char* api_base_url;
  const char* api;            /* "openai" | "anthropic" */
  const char* upstream_model; /* the model id to send to this backend */
  int half_open;              /* 1 when this is the backend's trial after an error cooldown */
} sb_attempt;

/* What one attempt came to. Zero-initialize, then set what you know. */
typedef struct sb_outcome {
  int http_status;                    /* 0 when no HTTP response arrived */
  sb_transport_error transport_error; /* set when http_status is 0 */
  int64_t latency_ms;
  int64_t ttfb_ms;
  int64_t prompt_tokens;
  int64_t completion_tokens;
  /* The upstream's Retry-After header value, or NULL. */
  const char* retry_after;
  /* The upstream's retry-after-ms header value, or NULL. */
  const char* retry_after_ms;
} sb_outcome;

/* Plans one request for the canonical model `model`. SB_NOT_FOUND when no
 * enabled backend serves it; SB_RESOURCE_EXHAUSTED when every candidate is
 * cooling down or rate limited (sb_last_error_retry_after_ms() says for how
 * long). On SB_OK *out is a new plan for sb_plan_free(); otherwise *out is
 * NULL. */
sb_code sb_router_route(sb_router* router, const char* model, sb_plan** out);

/* Takes the next backend to try (its rate-limit token and concurrency slot)
 * and fills *attempt; returns 1. Returns 0 when the plan is done (max
 * attempts made, or no candidate left). REQUIRES: the previous attempt was
 * reported with sb_plan_report(). */
int sb_plan_next(sb_plan* plan, sb_attempt* attempt);

/* Records the outcome of the attempt sb_plan_next() returned (cooldowns,
 * limits, latency) and returns its class. REQUIRES: an attempt is open. */
sb_outcome_class sb_plan_report(sb_plan* plan, const sb_outcome* outcome);

/* 1 when the request may move on to another backend after `c`. */
int sb_should_fail_over(sb_outcome_class c);

/* How many attempts the plan has made. */
int sb_plan_attempts(const sb_plan* plan);

/* The decision trace as a JSON array: every backend examined, tried or
 * skipped and why, e.g. [{"backend":"a","pool":"primary","decision":"tried",
 * "status":429},...]. For sb_free(); NULL only when out of memory. */
char* sb_plan_trace_json(const sb_plan* plan);

/* Releases the plan; an attempt not reported gives its slot back. */
void sb_plan_free(sb_plan* plan);

/* ---------------------------------------------------------------------------
 * Proxy: the engine the server uses, without the server. It routes, sends
 * the request to the backend over libcurl with the backend's API key, fails
 * over until the first byte, and records one usage record per request.
 */
typedef struct sb_proxy sb_proxy;
typedef struct sb_response sb_response;

typedef struct sb_proxy_options {
  /* Upstream connect timeout in milliseconds; 0: 10 s. */
  int64_t connect_timeout_ms;
  /* Deadline for a whole request across attempts; 0: the backends' own. */
  int64_t request_timeout_ms;
  /* Largest request body; 0: the config's body_limit_bytes. */
  int64_t body_limit_bytes;
} sb_proxy_options;

/* Builds a proxy over `router` (borrowed; it must outlive the proxy) with a
 * libcurl upstream client. `options` may be NULL. *out is a new handle. */
sb_code sb_proxy_new(sb_router* router, const sb_proxy_options* options, sb_proxy** out);

/* Destroys the proxy. REQUIRES: no call on it is running. */
void sb_proxy_free(sb_proxy* proxy);

/* One client request. Zero-initialize, then set the fields. */
typedef struct sb_request {
  /* The path after /v1: "/chat/completions", "/completions", "/embeddings",
   * "/messages". */
  const char* endpoint;
  /* The JSON body, `body_len` bytes (0: up to the terminating NUL). */
  const char* body;
  size_t body_len;
  /* The client's wire format: "openai" (NULL means this) or "anthropic". */
  const char* api;
  /* Echoed as x-request-id and kept with the usage record; NULL: generated. */
  const char* request_id;
} sb_request;

/* Serves one request and waits for the whole response. A streamed answer
 * ("stream": true) is collected into the body. Returns SB_OK whenever a
 * response was produced, whatever its HTTP status (a 429 or 502 from
 * failover is a response); SB_INVALID_ARGUMENT for a request without
 * endpoint or body. On SB_OK *out is a new response for sb_response_free(). */
sb_code sb_proxy_forward(sb_proxy* proxy, const sb_request* request, sb_response** out);

/* Receives one whole SSE event (e.g. "data: {...}\n\n"), `len` bytes, not
 * NUL-terminated, borrowed for the duration of the call. Return 0 to go on,
 * anything else to abort: the upstream transfer is cancelled and the usage
 * record keeps what was delivered. Runs on the calling thread. */
typedef int (*sb_event_fn)(const char* event, size_t len, void* user_data);

/* Like sb_proxy_forward(), but a streamed 2xx answer is passed to
 * `on_event` event by event as it arrives, and the response's body stays
 * empty. Any other answer (an error, a non-streamed body) comes whole in the
 * response's body and `on_event` is not called. Returns SB_OK when a
 * response was produced, also when `on_event` aborted (see
 * sb_response_aborted()). */
sb_code sb_proxy_forward_stream(sb_proxy* proxy, const sb_request* request,
                                sb_event_fn on_event, void* user_data, sb_response** out);

/* The HTTP status for the client. */
int sb_response_status(const sb_response* response);

/* The body bytes; *len (may be NULL) receives their count. Borrowed from the
 * response, NUL-terminated. */
const char* sb_response_body(const sb_response* response, size_t* len);

/* The value of header `name` (case-insensitive), e.g. "x-switchboard-backend",
 * "x-switchboard-attempts", "x-request-id", "retry-after", or NULL. Borrowed
 * from the response. */
const char* sb_response_header(const sb_response* response, const char* name);

/* 1 when the response was streamed (sb_proxy_forward_stream() delivered it
 * to the callback, or sb_proxy_forward() collected it). */
int sb_response_streamed(const sb_response* response);

/* 1 when the event callback asked to abort. */
int sb_response_aborted(const sb_response* response);

void sb_response_free(sb_response* response);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif /* SWITCHBOARD_C_API_H_ */

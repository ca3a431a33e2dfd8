/* The C interface from a plain C11 program: storage, backends, route plans
 * with failover and traces, and the proxy forwarding to a mock upstream,
 * streamed and not.
 *
 *   c_api_test MOCK_URL          (mock_upstream.py runs it: {mock})
 */
#define _POSIX_C_SOURCE 200809L  /* mkdtemp */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/c_api.h"

static int failures = 0;

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, sb_last_error_message());                   \
      ++failures;                                                           \
    }                                                                       \
  } while (0)

#define REQUIRE(cond)                                                       \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, sb_last_error_message());                   \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

static const char* mock_url;

/* A backend JSON object with a secret key, serving gpt-4o as gpt-4o-up. */
static char* BackendJson(const char* name, const char* pool, const char* path_prefix) {
  static const char* format =
      "{\"name\":\"%s\",\"pool\":\"%s\",\"api_base_url\":\"%s%s/v1\","
      "\"api_key\":\"sk-secret-c-test-0001\","
      "\"model_mappings\":{\"gpt-4o\":\"gpt-4o-up\"}}";
  size_t size = strlen(format) + strlen(name) + strlen(pool) + strlen(mock_url) +
                strlen(path_prefix) + 1;
  char* out = malloc(size);
  REQUIRE(out != NULL);
  snprintf(out, size, format, name, pool, mock_url, path_prefix);
  return out;
}

static void CreateBackend(sb_router* router, const char* name, const char* pool,
                          const char* prefix) {
  char* json = BackendJson(name, pool, prefix);
  char* stored = NULL;
  REQUIRE(sb_backend_create(router, json, &stored) == SB_OK);
  REQUIRE(stored != NULL);
  CHECK(strstr(stored, name) != NULL);
  CHECK(strstr(stored, "\"api_key_set\":true") != NULL);
  CHECK(strstr(stored, "sk-secret-c-test-0001") == NULL);
  sb_free(stored);
  free(json);
}

static void TestErrors(void) {
  CHECK(strcmp(sb_code_name(SB_NOT_FOUND), "NOT_FOUND") == 0);
  CHECK(strcmp(sb_version(), "") != 0);

  sb_storage* storage = NULL;
  CHECK(sb_storage_open_sqlite(NULL, &storage) == SB_INVALID_ARGUMENT);
  CHECK(storage == NULL);
  CHECK(strcmp(sb_last_error_param(), "path") == 0);

  REQUIRE(sb_storage_new_memory(&storage) == SB_OK);
  CHECK(strcmp(sb_last_error_message(), "") == 0);
  sb_router_options bad_key = {0};
  bad_key.master_key_base64 = "not base64!";
  sb_router* router = NULL;
  CHECK(sb_router_new(storage, &bad_key, &router) == SB_INVALID_ARGUMENT);
  CHECK(router == NULL);
  CHECK(strstr(sb_last_error_message(), "not base64!") == NULL);

  REQUIRE(sb_router_new(storage, NULL, &router) == SB_OK);
  char* out = NULL;
  CHECK(sb_backend_create(router, "{not json", &out) == SB_INVALID_ARGUMENT);
  CHECK(out == NULL);
  CHECK(strcmp(sb_last_error_param(), "") == 0);
  CHECK(sb_backend_create(router, "{\"name\":\"bad name!\",\"api_base_url\":\"http://x/v1\"}",
                          NULL) == SB_INVALID_ARGUMENT);
  CHECK(strcmp(sb_last_error_param(), "name") == 0);

  CreateBackend(router, "only", "primary", "");
  char* again = BackendJson("only", "primary", "");
  CHECK(sb_backend_create(router, again, NULL) == SB_ALREADY_EXISTS);
  CHECK(strcmp(sb_last_error_param(), "name") == 0);
  free(again);

  sb_plan* plan = NULL;
  CHECK(sb_router_route(router, "no-such-model", &plan) == SB_NOT_FOUND);
  CHECK(plan == NULL);
  CHECK(strlen(sb_last_error_message()) > 0);

  CHECK(sb_backend_delete(router, "bkd_missing") == SB_NOT_FOUND);
  CHECK(sb_backend_get(router, "bkd_missing", &out) == SB_NOT_FOUND);
  sb_router_free(router);
  sb_storage_free(storage);
  /* Freeing NULL is allowed. */
  sb_router_free(NULL);
  sb_storage_free(NULL);
  sb_plan_free(NULL);
  sb_response_free(NULL);
}

/* Route plans driven by the caller: a 429 on the primary fails over to the
 * fallback, the primary then cools down, and the traces say so. */
static void TestRoutePlans(void) {
  sb_storage* storage = NULL;
  sb_router* router = NULL;
  REQUIRE(sb_storage_new_memory(&storage) == SB_OK);
  REQUIRE(sb_router_new(storage, NULL, &router) == SB_OK);
  CreateBackend(router, "main", "primary", "");
  CreateBackend(router, "spare", "fallback", "");

  sb_plan* plan = NULL;
  REQUIRE(sb_router_route(router, "gpt-4o", &plan) == SB_OK);
  sb_attempt attempt;
  REQUIRE(sb_plan_next(plan, &attempt) == 1);
  CHECK(strcmp(attempt.backend_name, "main") == 0);
  CHECK(strcmp(attempt.upstream_model, "gpt-4o-up") == 0);
  CHECK(strcmp(attempt.pool, "primary") == 0);
  CHECK(attempt.number == 1);
  sb_outcome outcome = {0};
  outcome.http_status = 429;
  outcome.retry_after = "30";
  outcome.latency_ms = 12;
  sb_outcome_class c = sb_plan_report(plan, &outcome);
  CHECK(c == SB_OUTCOME_RATE_LIMITED);
  CHECK(sb_should_fail_over(c) == 1);

  REQUIRE(sb_plan_next(plan, &attempt) == 1);
  CHECK(strcmp(attempt.backend_name, "spare") == 0);
  CHECK(attempt.number == 2);
  sb_outcome ok = {0};
  ok.http_status = 200;
  c = sb_plan_report(plan, &ok);
  CHECK(c == SB_OUTCOME_SUCCESS);
  CHECK(sb_should_fail_over(c) == 0);
  CHECK(sb_plan_attempts(plan) == 2);
  char* trace = sb_plan_trace_json(plan);
  REQUIRE(trace != NULL);
  CHECK(strstr(trace, "\"backend\":\"main\"") != NULL);
  CHECK(strstr(trace, "\"status\":429") != NULL);
  CHECK(strstr(trace, "\"backend\":\"spare\"") != NULL);
  sb_free(trace);
  sb_plan_free(plan);

  /* The 429 cooled "main" down for 30 s: the next plan skips it. */
  REQUIRE(sb_router_route(router, "gpt-4o", &plan) == SB_OK);
  REQUIRE(sb_plan_next(plan, &attempt) == 1);
  CHECK(strcmp(attempt.backend_name, "spare") == 0);
  trace = sb_plan_trace_json(plan);
  REQUIRE(trace != NULL);
  CHECK(strstr(trace, "skipped_cooling") != NULL);
  sb_free(trace);
  /* Dropped with an open attempt: its slot is given back. */
  sb_plan_free(plan);

  /* A 429 on the fallback too: nothing left, and the caller learns for how long. */
  REQUIRE(sb_router_route(router, "gpt-4o", &plan) == SB_OK);
  REQUIRE(sb_plan_next(plan, &attempt) == 1);
  outcome.retry_after = "60";
  CHECK(sb_plan_report(plan, &outcome) == SB_OUTCOME_RATE_LIMITED);
  CHECK(sb_plan_next(plan, &attempt) == 0);
  sb_plan_free(plan);
  CHECK(sb_router_route(router, "gpt-4o", &plan) == SB_RESOURCE_EXHAUSTED);
  CHECK(plan == NULL);
  CHECK(sb_last_error_retry_after_ms() >= 29000);
  CHECK(sb_last_error_retry_after_ms() <= 30000);

  /* The listing shows the live state; no key ever comes back. */
  char* list = NULL;
  REQUIRE(sb_backend_list(router, &list) == SB_OK);
  CHECK(strstr(list, "\"name\":\"main\"") != NULL);
  CHECK(strstr(list, "\"status\":\"cooling\"") != NULL);
  CHECK(strstr(list, "sk-secret") == NULL);
  sb_free(list);

  sb_router_free(router);
  sb_storage_free(storage);
}

struct Collected {
  int events;
  int abort_after;
  char text[8192];
};

static int OnEvent(const char* event, size_t len, void* user_data) {
  struct Collected* c = user_data;
  ++c->events;
  size_t used = strlen(c->text);
  if (used + len < sizeof(c->text)) {
    memcpy(c->text + used, event, len);
    c->text[used + len] = '\0';
  }
  return c->abort_after > 0 && c->events >= c->abort_after;
}

/* The proxy engine against the mock: failover from a 429ing primary, a
 * whole answer, a streamed answer event by event, and an aborted stream. */
static void TestProxy(void) {
  sb_storage* storage = NULL;
  sb_router* router = NULL;
  sb_proxy* proxy = NULL;
  REQUIRE(sb_storage_new_memory(&storage) == SB_OK);
  REQUIRE(sb_router_new(storage, NULL, &router) == SB_OK);
  CreateBackend(router, "limited", "primary", "/r429");
  CreateBackend(router, "healthy", "fallback", "");
  sb_proxy_options options = {0};
  options.connect_timeout_ms = 2000;
  REQUIRE(sb_proxy_new(router, &options, &proxy) == SB_OK);

  sb_request request = {0};
  request.endpoint = "/chat/completions";
  request.body = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  request.request_id = "req_c_test_1";
  sb_response* response = NULL;
  REQUIRE(sb_proxy_forward(proxy, &request, &response) == SB_OK);
  CHECK(sb_response_status(response) == 200);
  const char* backend = sb_response_header(response, "X-Switchboard-Backend");
  REQUIRE(backend != NULL);
  CHECK(strcmp(backend, "healthy") == 0);
  const char* attempts = sb_response_header(response, "x-switchboard-attempts");
  REQUIRE(attempts != NULL);
  CHECK(strcmp(attempts, "2") == 0);
  CHECK(strcmp(sb_response_header(response, "x-request-id"), "req_c_test_1") == 0);
  size_t len = 0;
  const char* body = sb_response_body(response, &len);
  CHECK(len == strlen(body));
  CHECK(strstr(body, "mock answer for gpt-4o-up") != NULL);
  CHECK(sb_response_streamed(response) == 0);
  sb_response_free(response);

  /* Streamed: each SSE event reaches the callback, then [DONE]. */
  request.body =
      "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  request.request_id = NULL;
  struct Collected collected;
  memset(&collected, 0, sizeof collected);
  REQUIRE(sb_proxy_forward_stream(proxy, &request, OnEvent, &collected, &response) == SB_OK);
  CHECK(sb_response_status(response) == 200);
  CHECK(sb_response_streamed(response) == 1);
  CHECK(sb_response_aborted(response) == 0);
  CHECK(strcmp(sb_response_body(response, NULL), "") == 0);
  CHECK(sb_response_header(response, "x-request-id") != NULL);
  CHECK(collected.events == 5);
  CHECK(strstr(collected.text, "\"content\": \"mock\"") != NULL);
  CHECK(strstr(collected.text, "data: [DONE]\n\n") != NULL);
  sb_response_free(response);

  /* The callback stops after the first event. */
  memset(&collected, 0, sizeof collected);
  collected.abort_after = 1;
  REQUIRE(sb_proxy_forward_stream(proxy, &request, OnEvent, &collected, &response) == SB_OK);
  CHECK(sb_response_aborted(response) == 1);
  CHECK(collected.events == 1);
  sb_response_free(response);

  /* sb_proxy_forward collects a stream into the body. */
  REQUIRE(sb_proxy_forward(proxy, &request, &response) == SB_OK);
  CHECK(sb_response_streamed(response) == 1);
  CHECK(strstr(sb_response_body(response, NULL), "data: [DONE]") != NULL);
  sb_response_free(response);

  /* An unknown model is a 404 response, not a failed call. */
  request.body = "{\"model\":\"nope\",\"messages\":[]}";
  REQUIRE(sb_proxy_forward(proxy, &request, &response) == SB_OK);
  CHECK(sb_response_status(response) == 404);
  CHECK(strstr(sb_response_body(response, NULL), "model_not_found") != NULL);
  sb_response_free(response);

  request.endpoint = NULL;
  CHECK(sb_proxy_forward(proxy, &request, &response) == SB_INVALID_ARGUMENT);
  CHECK(response == NULL);
  CHECK(strcmp(sb_last_error_param(), "endpoint") == 0);

  /* Every request left a usage record with its trace. */
  REQUIRE(sb_router_flush(router) == SB_OK);
  char* usage = NULL;
  REQUIRE(sb_usage_list(router, 10, &usage) == SB_OK);
  CHECK(strstr(usage, "req_c_test_1") != NULL);
  CHECK(strstr(usage, "\"backend\":\"limited\"") != NULL);
  CHECK(strstr(usage, "sk-secret") == NULL);
  sb_free(usage);

  sb_proxy_free(proxy);
  sb_router_free(router);
  sb_storage_free(storage);
}

/* Backends in a SQLite file outlive the process that made them. */
static void TestSqlitePersists(void) {
  char dir[] = "/tmp/sb-c-api-XXXXXX";
  REQUIRE(mkdtemp(dir) != NULL);
  char path[256];
  char key_path[256];
  snprintf(path, sizeof path, "%s/switchboard.db", dir);
  snprintf(key_path, sizeof key_path, "%s/switchboard.key", dir);
  sb_router_options options = {0};
  options.master_key_file = key_path;

  sb_storage* storage = NULL;
  sb_router* router = NULL;
  REQUIRE(sb_storage_open_sqlite(path, &storage) == SB_OK);
  REQUIRE(sb_router_new(storage, &options, &router) == SB_OK);
  CreateBackend(router, "kept", "primary", "");
  char* list = NULL;
  REQUIRE(sb_backend_list(router, &list) == SB_OK);
  const char* id_at = strstr(list, "\"id\":\"");
  REQUIRE(id_at != NULL);
  char id[64] = {0};
  memcpy(id, id_at + 6, 28); /* "bkd_" + 24 hex */
  sb_free(list);
  sb_router_free(router);
  sb_storage_free(storage);

  REQUIRE(sb_storage_open_sqlite(path, &storage) == SB_OK);
  REQUIRE(sb_router_new(storage, &options, &router) == SB_OK);
  char* got = NULL;
  REQUIRE(sb_backend_get(router, id, &got) == SB_OK);
  CHECK(strstr(got, "\"name\":\"kept\"") != NULL);
  sb_free(got);
  CHECK(sb_backend_delete(router, id) == SB_OK);
  CHECK(sb_backend_delete(router, id) == SB_NOT_FOUND);
  sb_router_free(router);
  sb_storage_free(storage);

  remove(path);
  char extra[300];
  snprintf(extra, sizeof extra, "%s-wal", path);
  remove(extra);
  snprintf(extra, sizeof extra, "%s-shm", path);
  remove(extra);
  remove(key_path);
  rmdir(dir);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MOCK_URL\n", argv[0]);
    return 2;
  }
  mock_url = argv[1];
  TestErrors();
  TestRoutePlans();
  TestProxy();
  TestSqlitePersists();
  if (failures != 0) {
    fprintf(stderr, "c_api_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}

/* c_api: switchboard from C. Creates two backends for an OpenAI-compatible
 * upstream (the first one's path answers 429 on the project's mock, so the
 * request fails over), forwards a chat completion, streams another one event
 * by event, and prints the request's decision trace from the usage records.
 *
 *   ./c_api_example http://127.0.0.1:8000      (the upstream's base, without /v1)
 */
#include <stdio.h>
#include <string.h>

#include <switchboard/c_api.h>

static int Fail(const char* what) {
  fprintf(stderr, "c_api_example: %s: %s\n", what, sb_last_error_message());
  return 1;
}

static int PrintEvent(const char* event, size_t len, void* user_data) {
  int* count = user_data;
  ++*count;
  printf("event %d: %.*s", *count, (int)len, event);
  return 0; /* nonzero would abort the stream */
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s UPSTREAM_URL\n", argv[0]);
    return 2;
  }
  sb_storage* storage = NULL;
  sb_router* router = NULL;
  sb_proxy* proxy = NULL;
  if (sb_storage_new_memory(&storage) != SB_OK) return Fail("storage");
  if (sb_router_new(storage, NULL, &router) != SB_OK) return Fail("router");

  char json[1024];
  snprintf(json, sizeof json,
           "{\"name\":\"primary-1\",\"pool\":\"primary\",\"api_base_url\":\"%s/r429/v1\","
           "\"api_key\":\"sk-example-0000000001\",\"model_mappings\":{\"gpt-4o\":\"gpt-4o\"}}",
           argv[1]);
  if (sb_backend_create(router, json, NULL) != SB_OK) return Fail("create primary-1");
  snprintf(json, sizeof json,
           "{\"name\":\"fallback-1\",\"pool\":\"fallback\",\"api_base_url\":\"%s/v1\","
           "\"api_key\":\"sk-example-0000000002\",\"model_mappings\":{\"gpt-4o\":\"gpt-4o\"}}",
           argv[1]);
  if (sb_backend_create(router, json, NULL) != SB_OK) return Fail("create fallback-1");

  if (sb_proxy_new(router, NULL, &proxy) != SB_OK) return Fail("proxy");
  sb_request request = {0};
  request.endpoint = "/chat/completions";
  request.body = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  sb_response* response = NULL;
  if (sb_proxy_forward(proxy, &request, &response) != SB_OK) return Fail("forward");
  const int status = sb_response_status(response);
  printf("HTTP %d from %s after %s attempt(s)\n%s\n", status,
         sb_response_header(response, "x-switchboard-backend"),
         sb_response_header(response, "x-switchboard-attempts"),
         sb_response_body(response, NULL));
  sb_response_free(response);

  request.body =
      "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  int events = 0;
  if (sb_proxy_forward_stream(proxy, &request, PrintEvent, &events, &response) != SB_OK) {
    return Fail("stream");
  }
  sb_response_free(response);

  /* Usage records carry each request's decision trace. */
  char* usage = NULL;
  if (sb_router_flush(router) != SB_OK || sb_usage_list(router, 1, &usage) != SB_OK) {
    return Fail("usage");
  }
  printf("latest usage record: %s\n", usage);
  sb_free(usage);

  sb_proxy_free(proxy);
  sb_router_free(router);
  sb_storage_free(storage);
  return status == 200 && events > 0 ? 0 : 1;
}

// The PostgreSQL server the tests run against, started by the ctest fixture
// (pg_fixture.sh), and a raw libpq connection for looking behind the Storage.
#ifndef SWITCHBOARD_TESTS_POSTGRES_POSTGRES_TEST_ENV_H_
#define SWITCHBOARD_TESTS_POSTGRES_POSTGRES_TEST_ENV_H_

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace switchboard::testing {

// The test server's URL: $SWITCHBOARD_TEST_POSTGRES_URL, else the first line
// of the file $SWITCHBOARD_TEST_POSTGRES_URL_FILE (written by the fixture).
// "" when neither gives one; tests then fail (never skip).
inline std::string TestPostgresUrl() {
  if (const char* url = std::getenv("SWITCHBOARD_TEST_POSTGRES_URL"); url != nullptr && *url) {
    return url;
  }
  if (const char* file = std::getenv("SWITCHBOARD_TEST_POSTGRES_URL_FILE"); file != nullptr) {
    std::ifstream in(file);
    std::string line;
    if (std::getline(in, line)) return line;
  }
  return "";
}

// REQUIREs a test server and returns its URL.
inline std::string RequireTestPostgresUrl() {
  const std::string url = TestPostgresUrl();
  INFO("no PostgreSQL test server: run through ctest (fixture postgres_server) or set "
       "SWITCHBOARD_TEST_POSTGRES_URL");
  REQUIRE_FALSE(url.empty());
  return url;
}

// The password in the test server's URL ("postgresql://user:PASSWORD@...").
inline std::string TestPostgresPassword() {
  const std::string url = RequireTestPostgresUrl();
  const size_t colon = url.find(':', url.find("://") + 3);
  const size_t at = url.find('@');
  REQUIRE(colon != std::string::npos);
  REQUIRE(at != std::string::npos);
  REQUIRE(colon < at);
  return url.substr(colon + 1, at - colon - 1);
}

// A schema name no other test (or test process) uses.
inline std::string FreshSchemaName() {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}();
  return "sbtest_" + std::to_string(::getpid()) + "_" + std::to_string(salt % 100000) + "_" +
         std::to_string(counter++);
}

// A plain libpq connection, for what the Storage interface does not show.
// Not thread-safe; one owner.
class RawPostgres {
 public:
  explicit RawPostgres(const std::string& url) : conn_(PQconnectdb(url.c_str())) {}
  ~RawPostgres() { PQfinish(conn_); }
  RawPostgres(const RawPostgres&) = delete;
  RawPostgres& operator=(const RawPostgres&) = delete;

  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  std::string error() const { return PQerrorMessage(conn_); }

  // Runs `sql` with text parameters; the rows as text (NULL as nullopt).
  // Fails the test on an error.
  std::vector<std::vector<std::optional<std::string>>> Query(
      const std::string& sql, const std::vector<std::string>& params = {}) {
    std::vector<const char*> values;
    for (const std::string& p : params) values.push_back(p.c_str());
    PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
    const ExecStatusType st = PQresultStatus(r);
    INFO(sql << ": " << PQresultErrorMessage(r));
    const bool good = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    std::vector<std::vector<std::optional<std::string>>> rows;
    if (good) {
      for (int i = 0; i < PQntuples(r); ++i) {
        auto& row = rows.emplace_back();
        for (int j = 0; j < PQnfields(r); ++j) {
          if (PQgetisnull(r, i, j)) {
            row.emplace_back();
          } else {
            row.emplace_back(std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j)));
          }
        }
      }
    }
    PQclear(r);
    CHECK(good);
    return rows;
  }

  // The single value of a one-row, one-column query ("" for none or NULL).
  std::string Value(const std::string& sql, const std::vector<std::string>& params = {}) {
    auto rows = Query(sql, params);
    if (rows.empty() || rows[0].empty() || !rows[0][0]) return "";
    return *rows[0][0];
  }

 private:
  PGconn* conn_;
};

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_POSTGRES_POSTGRES_TEST_ENV_H_

#include "admin_auth.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "http_util.h"

namespace switchboard::server {
namespace {

constexpr size_t kMinTokenLength = 16;

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

std::string ToHex(const unsigned char* data, size_t size) {
  std::string hex(size * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), data, size);
  hex.pop_back();
  return hex;
}

Result<std::string> ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  if (!in) return UnavailableError("cannot read " + path + ": " + std::strerror(errno));
  std::string line;
  std::getline(in, line);
  return Trim(line);
}

}  // namespace

Result<AdminAuth> AdminAuth::Load(const AdminAuthOptions& options) {
  if (sodium_init() < 0) return FailedPreconditionError("libsodium failed to initialize");
  AdminAuth auth;
  auto use = [&auth](const std::string& token, std::string source) -> Status {
    if (token.size() < kMinTokenLength) {
      return InvalidArgumentError("the admin token from " + source +
                                  " is shorter than 16 characters");
    }
    auth.hash_ = Sha256(token);
    auth.source_ = std::move(source);
    return Status::Ok();
  };
  if (!options.env_var.empty()) {
    if (const char* env = std::getenv(options.env_var.c_str()); env != nullptr && *env != '\0') {
      SWITCHBOARD_RETURN_IF_ERROR(use(Trim(env), "env"));
      return auth;
    }
  }
  if (!options.token_file.empty()) {
    auto token = ReadFirstLine(options.token_file);
    if (!token.ok()) return token.status();
    SWITCHBOARD_RETURN_IF_ERROR(use(*token, "file"));
    return auth;
  }
  if (!options.hash_file.empty() && ::access(options.hash_file.c_str(), F_OK) == 0) {
    auto hex = ReadFirstLine(options.hash_file);
    if (!hex.ok()) return hex.status();
    size_t len = 0;
    if (hex->size() != 64 ||
        sodium_hex2bin(auth.hash_.data(), auth.hash_.size(), hex->data(), hex->size(), nullptr,
                       &len, nullptr) != 0 ||
        len != auth.hash_.size()) {
      return FailedPreconditionError(options.hash_file +
                                     " is not a SHA-256 hash: delete it to generate a new token");
    }
    auth.source_ = "stored hash";
    return auth;
  }
  // First start: 32 random bytes (256 bits), shown once.
  unsigned char bytes[32];
  randombytes_buf(bytes, sizeof(bytes));
  std::string token = "sbadm_" + ToHex(bytes, sizeof(bytes));
  sodium_memzero(bytes, sizeof(bytes));
  auth.hash_ = Sha256(token);
  auth.source_ = "generated";
  if (!options.hash_file.empty()) {
    const int fd = ::open(options.hash_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      return UnavailableError("cannot create " + options.hash_file + ": " + std::strerror(errno));
    }
    const std::string line = ToHex(auth.hash_.data(), auth.hash_.size()) + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                    ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return UnavailableError("cannot write " + options.hash_file);
  }
  auth.generated_ = std::move(token);
  return auth;
}

bool AdminAuth::Verify(std::string_view token) const {
  const std::array<unsigned char, 32> presented = Sha256(token);
  return sodium_memcmp(presented.data(), hash_.data(), hash_.size()) == 0;
}

}  // namespace switchboard::server

// SseParser: server-sent events split at blank lines, whatever the line
// endings (\n, \r\n or \r), as the bytes arrive.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/proxy.h"

namespace switchboard {
namespace {

// Calls `fn(line)` for each line of `event` (terminators stripped).
template <typename Fn>
void ForEachLine(std::string_view event, Fn fn) {
  size_t start = 0;
  for (size_t i = 0; i < event.size(); ++i) {
    const char c = event[i];
    if (c != '\n' && c != '\r') continue;
    fn(event.substr(start, i - start));
    if (c == '\r' && i + 1 < event.size() && event[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < event.size()) fn(event.substr(start));
}

// The value of a "field: value" line when the line is that field, else nullopt.
std::optional<std::string_view> FieldValue(std::string_view line, std::string_view field) {
  if (line.size() < field.size() + 1 || line.substr(0, field.size()) != field ||
      line[field.size()] != ':') {
    return std::nullopt;
  }
  std::string_view value = line.substr(field.size() + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return value;
}

}  // namespace

void SseParser::Feed(std::string_view bytes, std::vector<std::string>* events) {
  buffer_.append(bytes.data(), bytes.size());
  // scanned_ is where the current line starts; an empty line closes the event.
  size_t i = scanned_;
  size_t line_start = scanned_;
  while (i < buffer_.size()) {
    const char c = buffer_[i];
    if (c != '\n' && c != '\r') {
      ++i;
      continue;
    }
    size_t next = i + 1;
    if (c == '\r') {
      // A lone \r at the end may be half of \r\n. That only matters for a
      // line with content; a blank line ends the event either way (a \n that
      // follows is then a blank line of its own, and carries nothing).
      if (next == buffer_.size() && i != line_start) break;
      if (next < buffer_.size() && buffer_[next] == '\n') ++next;
    }
    const bool empty_line = i == line_start;
    i = next;
    line_start = next;
    if (empty_line) {
      const std::string_view event(buffer_.data(), next);
      // Blank lines between events carry nothing.
      if (event.find_first_not_of("\r\n") != std::string_view::npos) {
        events->emplace_back(event);
      }
      buffer_.erase(0, next);
      i = 0;
      line_start = 0;
    }
  }
  scanned_ = line_start;
}

std::string SseParser::Data(std::string_view event) {
  std::string data;
  bool first = true;
  ForEachLine(event, [&](std::string_view line) {
    if (auto value = FieldValue(line, "data")) {
      if (!first) data += '\n';
      data.append(value->data(), value->size());
      first = false;
    }
  });
  return data;
}

std::string SseParser::EventType(std::string_view event) {
  std::string type;
  ForEachLine(event, [&](std::string_view line) {
    if (auto value = FieldValue(line, "event")) type.assign(value->data(), value->size());
  });
  return type;
}

}  // namespace switchboard

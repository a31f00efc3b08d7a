#include "ipckit/core/error.hpp"

#include <cctype>
#include <cerrno>

namespace ipckit {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ipckit"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::timeout: return "timed out";
      case errc::peer_dead: return "peer process died";
      case errc::owner_dead: return "previous owner died holding the mutex";
      case errc::barrier_broken: return "barrier broken";
      case errc::closed: return "closed";
      case errc::message_too_large: return "message too large";
      case errc::bad_frame: return "bad frame";
      case errc::invalid_argument: return "invalid argument";
      case errc::invalid_name: return "invalid name";
      case errc::not_found: return "not found";
      case errc::already_exists: return "already exists";
      case errc::size_mismatch: return "size mismatch";
      case errc::bad_layout: return "bad shared-memory layout";
      case errc::out_of_memory: return "shared segment out of memory";
      case errc::child_failed: return "child process failed";
      case errc::remote_error: return "remote error";
      case errc::worker_lost: return "worker lost";
      case errc::interrupted: return "interrupted";
      case errc::cancelled: return "cancelled";
    }
    return "unknown ipckit error " + std::to_string(ev);
  }
};

}  // namespace

namespace {
// "what: text", or `what` alone when it already holds the code's text (any case).
std::string compose(const std::string& what, const std::error_code& ec) {
  std::string text = ec.message();
  const auto lower = [](std::string v) {
    for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return v;
  };
  if (what.empty()) return text;
  if (lower(what).find(lower(text)) != std::string::npos) return what;
  return what + ": " + text;
}
}  // namespace

Error::Error(std::error_code ec, const std::string& what)
    : std::system_error(ec, what), what_(std::make_shared<const std::string>(compose(what, ec))) {}

const std::error_category& ipckit_category() noexcept {
  static const Category category;
  return category;
}

std::string attempted(const std::system_error& e) {
  std::string w = e.what();
  const std::string tail = ": " + e.code().message();
  if (w.size() >= tail.size() && w.compare(w.size() - tail.size(), tail.size(), tail) == 0) {
    w.resize(w.size() - tail.size());
  }
  return w;
}

void throw_errno(const std::string& what) { throw_errno(errno, what); }

void throw_errno(int err, const std::string& what) {
  throw Error(std::error_code(err, std::system_category()), what + " failed");
}

void throw_error(errc e, const std::string& what) { throw Error(e, what); }

}  // namespace ipckit

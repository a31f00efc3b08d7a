#include "ipckit/channel/codec.hpp"

namespace ipckit::detail {

void throw_codec(const std::string& what) { throw_error(errc::bad_frame, what); }

}  // namespace ipckit::detail

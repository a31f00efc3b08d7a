// The umbrella header: every public ipckit type.
#pragma once

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/shm/arena.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/event_count.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/semaphore.hpp"

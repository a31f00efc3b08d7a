/// @file
/// The umbrella header: every public ipckit type, except those that pull in another
/// library: BoostSpscQueue/BoostMpmcQueue (ipckit/channel/boost_queue.hpp) and MpiComm
/// (ipckit/spmd/mpi_comm.hpp).
#pragma once

#include "ipckit/channel/byte_ring.hpp"
#include "ipckit/channel/channel.hpp"
#include "ipckit/channel/codec.hpp"
#include "ipckit/channel/mpmc_queue.hpp"
#include "ipckit/channel/socket_channel.hpp"
#include "ipckit/channel/spsc_queue.hpp"
#include "ipckit/core/cpu_count.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/core/futex.hpp"
#include "ipckit/core/process.hpp"
#include "ipckit/core/unique_fd.hpp"
#include "ipckit/pool/exceptions.hpp"
#include "ipckit/pool/pool.hpp"
#include "ipckit/pool/progress.hpp"
#include "ipckit/shm/arena.hpp"
#include "ipckit/shm/segment.hpp"
#include "ipckit/shm/shared_array.hpp"
#include "ipckit/spmd/cart_comm.hpp"
#include "ipckit/spmd/comm.hpp"
#include "ipckit/spmd/run.hpp"
#include "ipckit/spmd/shm_comm.hpp"
#include "ipckit/sync/barrier.hpp"
#include "ipckit/sync/condition.hpp"
#include "ipckit/sync/event.hpp"
#include "ipckit/sync/event_count.hpp"
#include "ipckit/sync/mutex.hpp"
#include "ipckit/sync/semaphore.hpp"

// main() for a GoogleTest program under mpirun: every rank runs every test; the program (and
// with it mpirun) fails when a test fails on any rank. Rank 0 prints as usual; the others
// print only their failures, with the rank. A test that does not end within `test_seconds`
// (a deadlock) ends its rank, which makes mpirun end the job.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>

namespace ipckit::testing {

namespace mpi_main {
inline char current_test[256] = "(none)";
inline int rank = 0;
inline unsigned test_seconds = 120;
inline const char* program = "test";

extern "C" inline void on_test_timeout(int) {
  char line[400];
  const int n =
      std::snprintf(line, sizeof line, "%s: rank %d: %s did not end within %u s (deadlock?)\n",
                    program, rank, current_test, test_seconds);
  if (n > 0) (void)!write(STDERR_FILENO, line, static_cast<std::size_t>(n));
  _exit(3);
}

// Arms a per-test alarm, and on ranks other than 0 prints only failures, with the rank.
class RankListener : public ::testing::EmptyTestEventListener {
 public:
  explicit RankListener(bool print_failures) : print_failures_(print_failures) {}
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::snprintf(current_test, sizeof current_test, "%s.%s", info.test_suite_name(), info.name());
    alarm(test_seconds);
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!print_failures_ || !result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s failed at %s:%d\n%s\n", rank, current_test,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo&) override { alarm(0); }

 private:
  bool print_failures_;
};
}  // namespace mpi_main

// Runs every test on this rank (MPI initialised, InitGoogleTest called); returns this rank's
// exit code after rank 0 printed how many ranks failed.
inline int run_mpi_tests(const char* program, unsigned test_seconds) {
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_main::rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  mpi_main::program = program;
  mpi_main::test_seconds = test_seconds;
  struct sigaction sa {};
  sa.sa_handler = mpi_main::on_test_timeout;
  sigaction(SIGALRM, &sa, nullptr);
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (mpi_main::rank != 0) delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new mpi_main::RankListener(mpi_main::rank != 0));

  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int failed_ranks = failed;
  MPI_Allreduce(MPI_IN_PLACE, &failed_ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (mpi_main::rank == 0) {
    std::printf("%s: %d of %d ranks had failures\n", program, failed_ranks, size);
  }
  return failed;
}

}  // namespace ipckit::testing

// The QSBR guard checks of builds configured with KEEL_QSBR_GUARD_CHECKS (Debug builds, and
// the asan preset that scripts/test.sh runs). Other builds compile no checks and no tests here.
#include <memory>

#include "gtest/gtest.h"
#include "keel/config.h"
#include "keel/qsbr.h"
#include "keel/rcu_cell.h"

#if KEEL_QSBR_GUARD_CHECKS
namespace keel {
namespace {

TEST(QsbrGuardCheckTest, QuiescentWithALiveGuardAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  RcuCell<int> cell(std::make_shared<const int>(1));
  EXPECT_DEATH(
      {
        QsbrThread qsbr;
        auto guard = cell.ReadQsbr(qsbr);
        qsbr.Quiescent();
      },
      "QsbrGuard is alive");
}

TEST(QsbrGuardCheckTest, ReadQsbrOnAnOfflineThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  RcuCell<int> cell(std::make_shared<const int>(1));
  EXPECT_DEATH(
      {
        QsbrThread qsbr;
        qsbr.Offline();
        auto guard = cell.ReadQsbr(qsbr);
      },
      "offline thread");
}

TEST(QsbrGuardCheckTest, AGuardDestroyedBeforeQuiescentIsFine) {
  RcuCell<int> cell(std::make_shared<const int>(7));
  QsbrThread qsbr;
  {
    auto guard = cell.ReadQsbr(qsbr);
    EXPECT_EQ(*guard, 7);
  }
  qsbr.Quiescent();
}

}  // namespace
}  // namespace keel
#endif  // KEEL_QSBR_GUARD_CHECKS

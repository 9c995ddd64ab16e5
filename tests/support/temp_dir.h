// MakeTempDir(name): a fresh, private directory under $TMPDIR (or /tmp) for one test.
#ifndef KEEL_TESTS_SUPPORT_TEMP_DIR_H_
#define KEEL_TESTS_SUPPORT_TEMP_DIR_H_

#include <stdlib.h>

#include <cstdlib>
#include <string>

namespace keel::testing {

// Creates $TMPDIR/<name>.XXXXXX (mode 0700) and returns its path; "" if it cannot.
inline std::string MakeTempDir(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + name + ".XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

}  // namespace keel::testing

#endif  // KEEL_TESTS_SUPPORT_TEMP_DIR_H_

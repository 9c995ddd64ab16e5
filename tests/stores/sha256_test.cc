#include "sha256.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "gtest/gtest.h"

namespace keel::internal {
namespace {

struct Vector {
  std::string_view what;
  std::string message;
  std::string_view digest_hex;
};

// The SHA-256 examples of NIST's FIPS 180-4 example document and the long-message vector of
// FIPS 180-2 Appendix B.3.
TEST(Sha256Test, MatchesTheNistTestVectors) {
  const Vector vectors[] = {
      {"the empty message", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"one block: abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"two blocks: the 448-bit message",
       "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"the 896-bit message",
       "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmn"
       "opqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {"one million 'a'", std::string(1000000, 'a'),
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const Vector& v : vectors) {
    EXPECT_EQ(ToHex(Sha256Of(v.message)), v.digest_hex) << v.what;
  }
}

// The padding puts the length in the last 8 bytes of a block, so messages of 55 bytes and
// fewer fit in one padded block and 56 bytes need two. Digests from Python's hashlib.
TEST(Sha256Test, PadsMessagesAroundTheBlockBoundariesCorrectly) {
  const std::pair<size_t, std::string_view> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
  };
  for (const auto& [length, digest_hex] : cases) {
    EXPECT_EQ(ToHex(Sha256Of(std::string(length, 'a'))), digest_hex) << length << " bytes";
  }
}

TEST(Sha256Test, HashesEveryByteValue) {
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(ToHex(Sha256Of(all_bytes)),
            "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880");
}

TEST(Sha256Test, StreamingInRandomPiecesGivesTheOneShotDigest) {
  std::mt19937_64 random(20240601);
  for (int round = 0; round < 200; ++round) {
    std::string message(std::uniform_int_distribution<size_t>(0, 5000)(random), '\0');
    for (char& c : message) c = static_cast<char>(random());
    const Sha256Digest expected = Sha256Of(message);

    Sha256 hasher;
    size_t at = 0;
    // Pieces from 0 (an empty Update) to a little over two blocks.
    std::uniform_int_distribution<size_t> piece_size(0, 150);
    while (at < message.size()) {
      const size_t piece = std::min(piece_size(random), message.size() - at);
      hasher.Update(std::string_view(message).substr(at, piece));
      at += piece;
    }
    EXPECT_EQ(hasher.Finish(), expected) << "round " << round << ", " << message.size() << " bytes";
  }
}

TEST(Sha256Test, ByteAtATimeGivesTheOneShotDigest) {
  const std::string message(1000, 'x');
  Sha256 hasher;
  for (char c : message) hasher.Update(std::string_view(&c, 1));
  EXPECT_EQ(hasher.Finish(), Sha256Of(message));
}

TEST(Sha256Test, EmptyUpdatesChangeNothing) {
  Sha256 hasher;
  hasher.Update("");
  hasher.Update(std::string_view());
  hasher.Update("abc");
  hasher.Update(std::string_view());
  EXPECT_EQ(ToHex(hasher.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, FinishResetsTheHasherForTheNextMessage) {
  Sha256 hasher;
  hasher.Update("some earlier message that must not leak into the next digest");
  hasher.Finish();
  hasher.Update("abc");
  EXPECT_EQ(hasher.Finish(), Sha256Of("abc"));
  EXPECT_EQ(hasher.Finish(), Sha256Of(""));
}

TEST(Sha256Test, ToHexWritesLowerCaseDigitsMostSignificantByteFirst) {
  Sha256Digest digest{};
  digest[0] = 0x01;
  digest[1] = 0xab;
  digest[31] = 0xf0;
  EXPECT_EQ(ToHex(digest), "01ab" + std::string(58, '0') + "f0");
}

}  // namespace
}  // namespace keel::internal

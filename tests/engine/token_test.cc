#include "engine/token.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "engine/limits.h"

namespace tw {
namespace {

using RawKeys = std::vector<std::pair<uint8_t, std::array<uint8_t, 32>>>;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::array<uint8_t, 32> KeyOf(uint8_t seed) {
  std::array<uint8_t, 32> k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed * 31 + i * 7 + 1);
  return k;
}

std::string HexOf(const std::array<uint8_t, 32>& k) {
  std::string s;
  char buf[3];
  for (uint8_t b : k) {
    std::snprintf(buf, sizeof(buf), "%02x", b);
    s += buf;
  }
  return s;
}

// Reference base64url (no padding) for the test's own view of the wire format.
std::string B64Encode(const std::vector<uint8_t>& raw) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

std::vector<uint8_t> B64Decode(std::string_view s) {
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const size_t v = kAlphabet.find(c);
    EXPECT_NE(v, std::string_view::npos);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

// HMAC-SHA256 via OpenSSL's one-shot HMAC(), independent of the codec's precomputed states.
std::vector<uint8_t> ReferenceMac(const std::array<uint8_t, 32>& key, const uint8_t* msg,
                                  size_t n) {
  std::vector<uint8_t> mac(32);
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg, n, mac.data(), &len);
  EXPECT_EQ(len, 32u);
  return mac;
}

// A raw token signed by the reference MAC, with any version / key id the test likes.
std::string ForgeWithKey(uint8_t version, uint8_t key_id, const std::array<uint8_t, 32>& key) {
  std::vector<uint8_t> raw = {version, key_id, 0x12, 0x34};
  for (int i = 0; i < 16; ++i) raw.push_back(static_cast<uint8_t>(i + 1));
  const std::vector<uint8_t> mac = ReferenceMac(key, raw.data(), raw.size());
  raw.insert(raw.end(), mac.begin(), mac.begin() + TokenCodec::kMacBytes);
  return B64Encode(raw);
}

TaskId RandomId(std::mt19937_64& rng) {
  TaskId id{rng(), rng()};
  if (id.IsZero()) id.lo = 1;
  return id;
}

bool Decodes(const TokenCodec& codec, std::string_view token) {
  TaskId id;
  uint16_t shard = 0;
  return codec.Decode(token, &id, &shard);
}

class TokenTest : public ::testing::Test {
 protected:
  TokenCodec codec_{RawKeys{{7, KeyOf(1)}}};
  const TaskId id_{0x0123456789abcdefull, 0xfedcba9876543210ull};
};

// ---- task ids ----

constexpr int64_t kIdT0 = 1'763'000'000'000;  // a wall-clock time in ms (November 2025)

TEST(TaskIdGeneratorTest, IncreasingDistinctNonZeroWithARandomLowWord) {
  TaskIdGenerator ids;
  std::set<TaskId> seen;
  TaskId previous{};
  uint64_t lo_ones = 0, lo_zeros = 0;  // low-word bits seen set, seen clear
  for (int i = 0; i < 10'000; ++i) {
    const TaskId id = ids.Next(kIdT0);
    ASSERT_FALSE(id.IsZero());
    ASSERT_TRUE(seen.insert(id).second);
    ASSERT_GT(id, previous);  // TaskId order is the store's key order (hi, then lo, big-endian)
    // One millisecond, so the high word counts up from the time.
    ASSERT_EQ(id.hi, (static_cast<uint64_t>(kIdT0) << kTaskIdSequenceBits) + i);
    lo_ones |= id.lo;
    lo_zeros |= ~id.lo;
    previous = id;
  }
  EXPECT_EQ(lo_ones, ~0ull);
  EXPECT_EQ(lo_zeros, ~0ull);
}

TEST(TaskIdGeneratorTest, HighWordFollowsTheClockAndNeverGoesBack) {
  TaskIdGenerator ids;
  auto ms_of = [](const TaskId& id) { return static_cast<int64_t>(id.hi >> kTaskIdSequenceBits); };
  const TaskId a = ids.Next(kIdT0);
  const TaskId b = ids.Next(kIdT0 + 5);
  EXPECT_EQ(ms_of(a), kIdT0);
  EXPECT_EQ(ms_of(b), kIdT0 + 5);
  EXPECT_EQ(b.hi & ((1u << kTaskIdSequenceBits) - 1), 0u);  // a new millisecond starts at 0
  // The clock steps back: ids keep increasing from the last one.
  const TaskId c = ids.Next(kIdT0 - 60'000);
  EXPECT_EQ(c.hi, b.hi + 1);
  const TaskId d = ids.Next(kIdT0 + 5);
  EXPECT_EQ(d.hi, c.hi + 1);
}

TEST(TaskIdGeneratorTest, AFullMillisecondRunsIntoTheNextAndStaysOrdered) {
  TaskIdGenerator ids;
  constexpr uint64_t kPerMs = uint64_t{1} << kTaskIdSequenceBits;
  TaskId last{};
  for (uint64_t i = 0; i < kPerMs + 3; ++i) last = ids.Next(kIdT0);
  EXPECT_EQ(last.hi, (static_cast<uint64_t>(kIdT0 + 1) << kTaskIdSequenceBits) + 2);
  // The clock reaches that millisecond: no id is handed out twice.
  EXPECT_EQ(ids.Next(kIdT0 + 1).hi, last.hi + 1);
  EXPECT_EQ(ids.Next(kIdT0 + 2).hi, static_cast<uint64_t>(kIdT0 + 2) << kTaskIdSequenceBits);
}

TEST(TaskIdGeneratorTest, OutOfRangeClocksAreClamped) {
  TaskIdGenerator before_epoch;
  EXPECT_EQ(before_epoch.Next(-1).hi, 1u);  // 0 << bits, raised above the zero start
  EXPECT_EQ(before_epoch.Next(0).hi, 2u);
  TaskIdGenerator far;
  const uint64_t top = ~uint64_t{0} << kTaskIdSequenceBits;  // the largest millisecond
  EXPECT_EQ(far.Next(std::numeric_limits<int64_t>::max()).hi, top);
  EXPECT_EQ(far.Next(std::numeric_limits<int64_t>::max()).hi, top + 1);
}

// Two generators at the same time (two engines, or one restarted with its clock set back) share
// high words; the random low word keeps their ids apart.
TEST(TaskIdGeneratorTest, GeneratorsAtTheSameTimeDifferInTheLowWord) {
  TaskIdGenerator a, b;
  for (int i = 0; i < 1'000; ++i) {
    const TaskId x = a.Next(kIdT0);
    const TaskId y = b.Next(kIdT0);
    ASSERT_EQ(x.hi, y.hi);
    ASSERT_NE(x.lo, y.lo);
  }
}

// The ids are buffered per thread; a child must not hand out the ids its parent will.
TEST(TaskIdGeneratorTest, ForkedChildDoesNotRepeatTheParentsIds) {
  // Parent and child run equal generators at the same time: only the random words differ.
  TaskIdGenerator gen;
  (void)gen.Next(kIdT0);  // leave a partly used buffer behind
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  constexpr int kIds = 8;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    TaskIdGenerator gen_after_fork = gen;
    TaskId ids[kIds];
    for (TaskId& id : ids) id = gen_after_fork.Next(kIdT0);
    const ssize_t n = ::write(fds[1], ids, sizeof(ids));
    ::_exit(n == static_cast<ssize_t>(sizeof(ids)) ? 0 : 1);
  }
  ::close(fds[1]);
  TaskId parent[kIds];
  for (TaskId& id : parent) id = gen.Next(kIdT0);
  TaskId child[kIds];
  size_t got = 0;
  while (got < sizeof(child)) {
    const ssize_t n = ::read(fds[0], reinterpret_cast<char*>(child) + got, sizeof(child) - got);
    ASSERT_GT(n, 0);
    got += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0);
  for (const TaskId& p : parent) {
    for (const TaskId& c : child) EXPECT_NE(p, c);
  }
}

// ---- encode / decode ----

TEST_F(TokenTest, TokenIs46UrlSafeCharacters) {
  const std::string token = codec_.Encode(3, id_);
  EXPECT_EQ(token.size(), 46u);
  EXPECT_EQ(token.size(), TokenCodec::kTokenChars);
  for (char c : token) EXPECT_NE(kAlphabet.find(c), std::string_view::npos) << token;
}

TEST_F(TokenTest, RoundTripsRandomIdsAndShards) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 100'000; ++i) {
    const TaskId id = i == 0 ? TaskId{0, 1} : i == 1 ? TaskId{~0ull, ~0ull} : RandomId(rng);
    const uint16_t shard = i == 0 ? 0 : i == 1 ? 0xFFFF : static_cast<uint16_t>(rng());
    const std::string token = codec_.Encode(shard, id);
    TaskId got;
    uint16_t got_shard = 0;
    ASSERT_TRUE(codec_.Decode(token, &got, &got_shard)) << token;
    ASSERT_EQ(got, id);
    ASSERT_EQ(got_shard, shard);
  }
}

TEST_F(TokenTest, WireFormatIsVersionKeyIdShardIdAndTruncatedHmac) {
  const std::string token = codec_.Encode(0xABCD, id_);
  const std::vector<uint8_t> raw = B64Decode(token);
  ASSERT_EQ(raw.size(), TokenCodec::kTokenBytes);
  const std::vector<uint8_t> head = {1,    7,    0xAB, 0xCD, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                                     0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};
  EXPECT_EQ(std::vector<uint8_t>(raw.begin(), raw.begin() + 20), head);
  const std::vector<uint8_t> mac = ReferenceMac(KeyOf(1), raw.data(), 20);
  EXPECT_EQ(std::vector<uint8_t>(raw.begin() + 20, raw.end()),
            std::vector<uint8_t>(mac.begin(), mac.begin() + 14));
  EXPECT_EQ(B64Encode(raw), token);
}

TEST_F(TokenTest, AcceptsTokenSignedByReferenceHmac) {
  TaskId got;
  uint16_t shard = 0;
  ASSERT_TRUE(codec_.Decode(ForgeWithKey(1, 7, KeyOf(1)), &got, &shard));
  EXPECT_EQ(shard, 0x1234);
  EXPECT_EQ(got.hi, 0x0102030405060708ull);
  EXPECT_EQ(got.lo, 0x090a0b0c0d0e0f10ull);
}

TEST_F(TokenTest, EveryBitFlipOfTheBytesIsRejected) {
  const std::vector<uint8_t> raw = B64Decode(codec_.Encode(9, id_));
  for (size_t bit = 0; bit < raw.size() * 8; ++bit) {
    std::vector<uint8_t> flipped = raw;
    flipped[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_FALSE(Decodes(codec_, B64Encode(flipped))) << "bit " << bit;
  }
}

TEST_F(TokenTest, EveryBitFlipOfTheCharactersIsRejected) {
  const std::string token = codec_.Encode(9, id_);
  for (size_t bit = 0; bit < token.size() * 8; ++bit) {
    std::string flipped = token;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1u << (bit % 8)));
    EXPECT_FALSE(Decodes(codec_, flipped)) << "bit " << bit;
  }
}

// Includes the 15 non-canonical spellings of the last character (non-zero padding bits).
TEST_F(TokenTest, EverySingleCharacterChangeIsRejected) {
  const std::string token = codec_.Encode(9, id_);
  ASSERT_TRUE(Decodes(codec_, token));
  for (size_t pos = 0; pos < token.size(); ++pos) {
    for (int c = 0; c < 256; ++c) {
      if (static_cast<char>(c) == token[pos]) continue;
      std::string changed = token;
      changed[pos] = static_cast<char>(c);
      ASSERT_FALSE(Decodes(codec_, changed)) << "pos " << pos << " char " << c;
    }
  }
}

TEST_F(TokenTest, WrongLengthsAreRejected) {
  const std::string token = codec_.Encode(9, id_);
  EXPECT_FALSE(Decodes(codec_, ""));
  for (size_t n = 0; n < token.size(); ++n) {
    EXPECT_FALSE(Decodes(codec_, token.substr(0, n))) << n;
    EXPECT_FALSE(Decodes(codec_, token.substr(token.size() - n))) << n;
  }
  for (std::string_view extra : {"A", "=", "==", "\n", " ", "AA", "AAAA"}) {
    EXPECT_FALSE(Decodes(codec_, token + std::string(extra))) << extra;
    EXPECT_FALSE(Decodes(codec_, std::string(extra) + token)) << extra;
  }
  EXPECT_FALSE(Decodes(codec_, std::string(limits::kTaskTokenCharsMax, 'A')));
}

TEST_F(TokenTest, PaddingAndStandardBase64AndNonAlphabetAreRejected) {
  std::string token = codec_.Encode(9, id_);
  // A padded spelling: the same bytes in standard base64 form with "==".
  EXPECT_FALSE(Decodes(codec_, token.substr(0, 44) + "=="));
  std::mt19937_64 rng(42);
  // Find tokens containing '-' and '_' and respell them the standard-base64 way ('+', '/').
  int respelled = 0;
  for (int i = 0; i < 1000 && respelled < 2; ++i) {
    const std::string t = codec_.Encode(1, RandomId(rng));
    for (auto [url, std_char] : {std::pair{'-', '+'}, std::pair{'_', '/'}}) {
      const size_t at = t.find(url);
      if (at == std::string::npos) continue;
      std::string s = t;
      s[at] = std_char;
      EXPECT_FALSE(Decodes(codec_, s)) << s;
      ++respelled;
    }
  }
  EXPECT_GE(respelled, 2);
  const std::vector<std::string_view> bads = {"\xC3\xA9", std::string_view("\0", 1), "\xFF", "."};
  for (std::string_view bad : bads) {
    std::string s = token.substr(0, 46 - bad.size()) + std::string(bad);
    EXPECT_FALSE(Decodes(codec_, s));
  }
}

TEST_F(TokenTest, FailedDecodeLeavesOutputsUntouched) {
  std::string token = codec_.Encode(9, id_);
  token[5] = token[5] == 'A' ? 'B' : 'A';
  TaskId got{11, 22};
  uint16_t shard = 33;
  EXPECT_FALSE(codec_.Decode(token, &got, &shard));
  EXPECT_EQ(got, (TaskId{11, 22}));
  EXPECT_EQ(shard, 33);
}

TEST_F(TokenTest, TokenUnderAnotherKeyIsRejected) {
  const TokenCodec same_id_other_key(RawKeys{{7, KeyOf(2)}});
  const TokenCodec other_id_same_key(RawKeys{{8, KeyOf(1)}});
  EXPECT_FALSE(Decodes(codec_, same_id_other_key.Encode(9, id_)));
  EXPECT_FALSE(Decodes(codec_, other_id_same_key.Encode(9, id_)));
  EXPECT_FALSE(Decodes(same_id_other_key, codec_.Encode(9, id_)));
}

TEST_F(TokenTest, WrongVersionAndUnknownKeyIdAreRejectedEvenWithAValidMac) {
  EXPECT_TRUE(Decodes(codec_, ForgeWithKey(1, 7, KeyOf(1))));
  EXPECT_FALSE(Decodes(codec_, ForgeWithKey(0, 7, KeyOf(1))));
  EXPECT_FALSE(Decodes(codec_, ForgeWithKey(2, 7, KeyOf(1))));
  EXPECT_FALSE(Decodes(codec_, ForgeWithKey(1, 6, KeyOf(1))));
}

TEST(TokenRotationTest, LastKeySignsAndAllKeysVerify) {
  const TokenCodec old_codec(RawKeys{{1, KeyOf(1)}});
  const TokenCodec rotated(RawKeys{{1, KeyOf(1)}, {2, KeyOf(2)}});
  const TokenCodec newest_only(RawKeys{{2, KeyOf(2)}});
  EXPECT_EQ(rotated.signing_key_id(), 2);
  const TaskId id{5, 6};
  const std::string old_token = old_codec.Encode(4, id);
  const std::string new_token = rotated.Encode(4, id);
  EXPECT_EQ(B64Decode(new_token)[1], 2);
  TaskId got;
  uint16_t shard = 0;
  ASSERT_TRUE(rotated.Decode(old_token, &got, &shard));
  EXPECT_EQ(got, id);
  EXPECT_TRUE(Decodes(newest_only, new_token));
  EXPECT_FALSE(Decodes(old_codec, new_token));
}

TEST(TokenDeathTest, ContractViolationsAbort) {
  const TokenCodec codec(RawKeys{{1, KeyOf(1)}});
  EXPECT_DEATH(codec.Encode(0, TaskId{}), "IsZero");
  EXPECT_DEATH({ TokenCodec c(RawKeys{}); }, "empty");
  EXPECT_DEATH({ TokenCodec c(RawKeys{{1, KeyOf(1)}, {1, KeyOf(2)}}); }, "duplicate token key id");
}

// ---- key file ----

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-token-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (dir_ / "token.keys").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Write(const std::string& text) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << text;
  }
  std::string Read() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  size_t FilesInDir() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir_),
                                             std::filesystem::directory_iterator()));
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(KeyFileTest, CreatesFileWithMode0600AndOneKey) {
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(path_, &codec).ok());
  ASSERT_NE(codec, nullptr);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(codec->signing_key_id(), 1);
  EXPECT_EQ(FilesInDir(), 1u) << "temporary file left behind";
  // Exactly one key line, in the documented format.
  size_t key_lines = 0;
  std::istringstream lines(Read());
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    ++key_lines;
    ASSERT_EQ(line.size(), 5u + 64u) << line;
    EXPECT_EQ(line.substr(0, 5), "v1 1 ");
    EXPECT_EQ(line.find_first_not_of("0123456789abcdef", 5), std::string::npos) << line;
  }
  EXPECT_EQ(key_lines, 1u);
}

TEST_F(KeyFileTest, CreationIgnoresAPermissiveUmask) {
  const mode_t old = ::umask(0);
  std::unique_ptr<TokenCodec> codec;
  const Status s = TokenCodec::OpenKeyFile(path_, &codec);
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s.ToString();
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(KeyFileTest, ReopenGivesTheSameKey) {
  std::unique_ptr<TokenCodec> first, second;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(path_, &first).ok());
  const std::string before = Read();
  ASSERT_TRUE(TokenCodec::OpenKeyFile(path_, &second).ok());
  EXPECT_EQ(Read(), before);
  const TaskId id = TaskIdGenerator().Next(kIdT0);
  TaskId got;
  uint16_t shard = 0;
  ASSERT_TRUE(second->Decode(first->Encode(77, id), &got, &shard));
  EXPECT_EQ(got, id);
  EXPECT_EQ(shard, 77);
  EXPECT_EQ(first->Encode(77, id), second->Encode(77, id));
}

TEST_F(KeyFileTest, FreshFilesHoldDifferentKeys) {
  std::unique_ptr<TokenCodec> a, b;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(path_, &a).ok());
  ASSERT_TRUE(TokenCodec::OpenKeyFile((dir_ / "other.keys").string(), &b).ok());
  EXPECT_FALSE(Decodes(*b, a->Encode(1, TaskIdGenerator().Next(kIdT0))));
}

TEST_F(KeyFileTest, RotationFileWithTwoKeys) {
  Write("# rotated\n\nv1 1 " + HexOf(KeyOf(1)) + "\nv1 200 " + HexOf(KeyOf(2)));  // no final \n
  std::unique_ptr<TokenCodec> codec;
  const Status s = TokenCodec::OpenKeyFile(path_, &codec);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(codec->signing_key_id(), 200);
  const TokenCodec old_codec(RawKeys{{1, KeyOf(1)}});
  const TokenCodec new_codec(RawKeys{{200, KeyOf(2)}});
  const TaskId id{1, 2};
  EXPECT_TRUE(Decodes(*codec, old_codec.Encode(3, id)));
  EXPECT_EQ(codec->Encode(3, id), new_codec.Encode(3, id));
  EXPECT_EQ(B64Decode(codec->Encode(3, id))[1], 200);
}

TEST_F(KeyFileTest, UppercaseHexAndKeyIdZeroAreAccepted) {
  std::string hex = HexOf(KeyOf(3));
  for (char& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Write("v1 0 " + hex + "\n");
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(path_, &codec).ok());
  EXPECT_EQ(codec->signing_key_id(), 0);
  EXPECT_TRUE(Decodes(*codec, TokenCodec(RawKeys{{0, KeyOf(3)}}).Encode(1, TaskId{1, 1})));
}

TEST_F(KeyFileTest, ExistingPermissiveFileIsLoadedAsIs) {
  Write("v1 4 " + HexOf(KeyOf(4)) + "\n");
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  std::unique_ptr<TokenCodec> codec;
  EXPECT_TRUE(TokenCodec::OpenKeyFile(path_, &codec).ok());
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
}

TEST_F(KeyFileTest, CorruptFilesAreErrorsNotCrashes) {
  const std::string k = HexOf(KeyOf(5));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "holds no key"},
      {"# only a comment\n\n", "holds no key"},
      {"v2 1 " + k + "\n", ":1: expected a line starting"},
      {"V1 1 " + k + "\n", ":1: expected a line starting"},
      {" v1 1 " + k + "\n", ":1: expected a line starting"},
      {"v1 " + k + "\n", ":1: expected \"v1"},
      {"v1 1\n", ":1: expected \"v1"},
      {"v1 256 " + k + "\n", ":1: key id must be"},
      {"v1 -1 " + k + "\n", ":1: key id must be"},
      {"v1 0001 " + k + "\n", ":1: key id must be"},
      {"v1 x " + k + "\n", ":1: key id must be"},
      {"v1  1 " + k + "\n", ":1: key id must be"},
      {"v1 1 " + k.substr(1) + "\n", ":1: key must be exactly 64 hex digits"},
      {"v1 1 " + k + "0\n", ":1: key must be exactly 64 hex digits"},
      {"v1 1 " + k + "\r\n", ":1: key must be exactly 64 hex digits"},
      {"v1 1 " + k + " extra\n", ":1: key must be exactly 64 hex digits"},
      {"v1 1 " + k.substr(0, 63) + "g\n", ":1: key must be exactly 64 hex digits"},
      {"v1 1 " + k + "\n# ok\nv1 1 " + k + "\n", ":3: duplicate key id 1"},
      {std::string("\x00\xff\xfe garbage", 11), ":1: expected a line starting"},
      {std::string(limits::kTokenKeyFileBytesMax + 1, '#'), "larger than"},
  };
  for (const auto& [text, expected] : cases) {
    Write(text);
    std::unique_ptr<TokenCodec> codec;
    const Status s = TokenCodec::OpenKeyFile(path_, &codec);
    EXPECT_EQ(s.code(), Status::Code::kCorruption) << text.substr(0, 80);
    EXPECT_NE(s.message().find(expected), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(k), std::string::npos) << "key material in an error message";
    EXPECT_EQ(codec, nullptr);
  }
}

TEST_F(KeyFileTest, UnreadablePathsAreIoErrors) {
  std::unique_ptr<TokenCodec> codec;
  Status s = TokenCodec::OpenKeyFile(dir_.string(), &codec);  // a directory
  EXPECT_EQ(s.code(), Status::Code::kIoError) << s.ToString();
  s = TokenCodec::OpenKeyFile((dir_ / "no-such-dir" / "token.keys").string(), &codec);
  EXPECT_EQ(s.code(), Status::Code::kIoError) << s.ToString();
  EXPECT_EQ(codec, nullptr);
}

// link(2) rather than rename(2): racing first opens all end up with the one key that won.
TEST_F(KeyFileTest, ConcurrentFirstOpensAgreeOnOneKey) {
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<TokenCodec>> codecs(kThreads);
  std::vector<Status> status(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { status[i] = TokenCodec::OpenKeyFile(path_, &codecs[i]); });
  }
  for (auto& t : threads) t.join();
  const TaskId id = TaskIdGenerator().Next(kIdT0);
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i].ToString();
    for (int j = 0; j < kThreads; ++j) {
      EXPECT_TRUE(Decodes(*codecs[j], codecs[i]->Encode(1, id))) << i << " -> " << j;
    }
  }
  EXPECT_EQ(FilesInDir(), 1u);
}

}  // namespace
}  // namespace tw

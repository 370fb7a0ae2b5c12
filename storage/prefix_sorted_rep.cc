// Invariants (PrefixSortedRep):
//  1. entries_ holds every inserted entry, in insertion order; it only grows, under mu_.
//  2. Once read_only_ is set no insert follows (RocksDB's contract for MarkReadOnly), so the
//     first iterator of an immutable memtable sorts entries once into sorted_ (sort_once_,
//     outside mu_: RocksDB may ask an immutable memtable for ApproximateMemoryUsage under its
//     DB mutex, which must not wait for a sort), and every later iterator shares that array.
//     Iterators of a mutable memtable sort a private copy.
//  3. Every iterator created for a RocksDB arena lives in its own slot of slots_: RocksDB runs
//     such an iterator's destructor in place and never frees it, so the rep frees the slots
//     when it dies, after every iterator (RocksDB keeps a memtable alive while any of its
//     iterators is). Slots are not reused, which would race with the end of a destructor on
//     another thread; the memtables this rep serves get an iterator per flush and per full
//     scan, so a memtable's slots stay few.
#include "storage/prefix_sorted_rep.h"

#include <rocksdb/memtablerep.h>
#include <rocksdb/slice.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "engine/assert.h"

namespace tw {
namespace {

using rocksdb::MemTableRep;
using rocksdb::Slice;

// The sort key of one entry: the first 8 bytes of its user key, big-endian, zero-padded. For a
// bytewise comparator a smaller prefix means a smaller key; equal prefixes need the comparator.
struct Item {
  uint64_t prefix;
  const char* entry;
};

uint64_t UserKeyPrefix(const MemTableRep::KeyComparator& cmp, const char* entry) {
  const Slice internal_key = cmp.decode_key(entry);
  TW_ASSERT(internal_key.size() >= 8);  // user key + 8-byte sequence/type footer
  const size_t n = std::min<size_t>(internal_key.size() - 8, 8);
  unsigned char bytes[8] = {};
  std::memcpy(bytes, internal_key.data(), n);
  uint64_t prefix = 0;
  for (unsigned char b : bytes) prefix = (prefix << 8) | b;
  return prefix;
}

using Sorted = std::vector<const char*>;

// Sorts entries by the memtable's order. Items are built in entry order, a sequential pass
// over the arena (entries are allocated in insertion order); the sort then touches entries
// only to break prefix ties.
std::shared_ptr<const Sorted> SortEntries(const MemTableRep::KeyComparator& cmp,
                                          const std::vector<const char*>& entries) {
  std::vector<Item> items;
  items.reserve(entries.size());
  for (const char* e : entries) items.push_back(Item{UserKeyPrefix(cmp, e), e});
  std::sort(items.begin(), items.end(), [&cmp](const Item& a, const Item& b) {
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    return cmp(a.entry, b.entry) < 0;
  });
  auto sorted = std::make_shared<Sorted>();
  sorted->reserve(items.size());
  for (const Item& item : items) sorted->push_back(item.entry);
  return sorted;
}

class SortedIterator final : public MemTableRep::Iterator {
 public:
  SortedIterator(const MemTableRep::KeyComparator& cmp, std::shared_ptr<const Sorted> sorted)
      : cmp_(cmp), sorted_(std::move(sorted)), pos_(sorted_->size()) {}

  bool Valid() const override { return pos_ < sorted_->size(); }
  const char* key() const override {
    TW_ASSERT(Valid());
    return (*sorted_)[pos_];
  }
  void Next() override {
    TW_ASSERT(Valid());
    ++pos_;
  }
  void Prev() override {
    TW_ASSERT(Valid());
    pos_ = pos_ == 0 ? sorted_->size() : pos_ - 1;
  }
  // The first entry >= the target.
  void Seek(const Slice& internal_key, const char* memtable_key) override {
    const Slice target = Target(internal_key, memtable_key);
    const Sorted& s = *sorted_;
    auto it = std::lower_bound(s.begin(), s.end(), target,
                               [this](const char* e, const Slice& t) { return cmp_(e, t) < 0; });
    pos_ = static_cast<size_t>(it - s.begin());
  }
  // The last entry <= the target.
  void SeekForPrev(const Slice& internal_key, const char* memtable_key) override {
    const Slice target = Target(internal_key, memtable_key);
    const Sorted& s = *sorted_;
    auto it = std::upper_bound(s.begin(), s.end(), target,
                               [this](const Slice& t, const char* e) { return cmp_(e, t) > 0; });
    pos_ = it == s.begin() ? s.size() : static_cast<size_t>(it - s.begin()) - 1;
  }
  void SeekToFirst() override { pos_ = 0; }
  void SeekToLast() override { pos_ = sorted_->empty() ? 0 : sorted_->size() - 1; }

 private:
  // RocksDB passes the target either as an internal key or, when it has one, as an encoded
  // memtable key (length-prefixed internal key); both name the same internal key.
  Slice Target(const Slice& internal_key, const char* memtable_key) const {
    return memtable_key != nullptr ? cmp_.decode_key(memtable_key) : internal_key;
  }

  const MemTableRep::KeyComparator& cmp_;
  std::shared_ptr<const Sorted> sorted_;
  size_t pos_;  // == size(): not valid
};

class PrefixSortedRep final : public MemTableRep {
 public:
  PrefixSortedRep(const KeyComparator& cmp, rocksdb::Allocator* allocator)
      : MemTableRep(allocator), cmp_(cmp) {}

  void Insert(rocksdb::KeyHandle handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    TW_ASSERT(!read_only_);
    entries_.push_back(static_cast<const char*>(handle));
  }

  bool Contains(const char* key) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return std::find(entries_.begin(), entries_.end(), key) != entries_.end();
  }

  void MarkReadOnly() override {
    std::lock_guard<std::mutex> lock(mu_);
    read_only_ = true;
  }

  // Point reads would need RocksDB's internal LookupKey; the column families this rep serves
  // are never point-read (prefix_sorted_rep.h), so one is a bug in the store.
  void Get(const rocksdb::LookupKey& /*k*/, void* /*callback_args*/,
           bool (* /*callback_func*/)(void* arg, const char* entry)) override {
    TW_ASSERT(!"point read of a memtable that serves iterators only");
  }

  // Must not grow once the memtable is immutable (RocksDB asserts so when it drops one), so the
  // sorted copy is not counted; it is as big as entries_, and lives no longer than the memtable.
  size_t ApproximateMemoryUsage() override {
    std::lock_guard<std::mutex> lock(mu_);
    return sizeof(*this) + entries_.capacity() * sizeof(const char*);
  }

  Iterator* GetIterator(rocksdb::Arena* arena) override {
    std::shared_ptr<const Sorted> sorted;
    std::unique_lock<std::mutex> lock(mu_);
    if (read_only_) {
      lock.unlock();
      // Invariant 2: entries_ no longer changes, and mu_ ordered its last change before us.
      std::call_once(sort_once_, [this] { sorted_ = SortEntries(cmp_, entries_); });
      sorted = sorted_;
    } else {
      std::vector<const char*> copy = entries_;
      lock.unlock();
      sorted = SortEntries(cmp_, copy);
    }
    if (arena == nullptr) return new SortedIterator(cmp_, std::move(sorted));
    return new (NewSlot()) SortedIterator(cmp_, std::move(sorted));  // invariant 3
  }

 private:
  struct alignas(SortedIterator) Slot {
    unsigned char bytes[sizeof(SortedIterator)];
  };

  void* NewSlot() {
    std::lock_guard<std::mutex> lock(slots_mu_);
    slots_.push_back(std::make_unique<Slot>());
    return slots_.back().get();
  }

  const KeyComparator& cmp_;
  mutable std::mutex mu_;
  std::vector<const char*> entries_;  // invariant 1
  bool read_only_ = false;            // invariant 2
  std::once_flag sort_once_;
  std::shared_ptr<const Sorted> sorted_;  // once read_only_: entries_ sorted (sort_once_)
  std::mutex slots_mu_;
  std::vector<std::unique_ptr<Slot>> slots_;  // invariant 3
};

class PrefixSortedRepFactory final : public rocksdb::MemTableRepFactory {
 public:
  using rocksdb::MemTableRepFactory::CreateMemTableRep;
  MemTableRep* CreateMemTableRep(const MemTableRep::KeyComparator& cmp,
                                 rocksdb::Allocator* allocator,
                                 const rocksdb::SliceTransform* /*prefix_extractor*/,
                                 rocksdb::Logger* /*logger*/) override {
    return new PrefixSortedRep(cmp, allocator);
  }
  const char* Name() const override { return "TokenwheelPrefixSortedRep"; }
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewPrefixSortedRepFactory() {
  return std::make_shared<PrefixSortedRepFactory>();
}

}  // namespace tw

// The fixture of the AWS gateway's in-process tests: a Gateway (rpc/aws/gateway.h) on a free
// loopback port over a real Engine, with a ManualClock and a temp dir for the token key.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <utility>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/store.h"
#include "rpc/aws/gateway.h"
#include "tests/temp_dir.h"

namespace tw::rpc::testing {

class GatewayFixture : public ::testing::Test {
 public:
  static constexpr int64_t kStartMs = 1'700'000'000'000;  // the clock's start

 protected:
  // Opens the engine on `store` with `eo` (its token key file in the fixture's temp dir), and
  // sets the gateway's options to a free loopback port and 1 s long polls.
  void OpenEngine(EngineOptions eo, std::unique_ptr<Store> store) {
    eo.token_key_file = dir_.path() + "/token.key";
    auto engine = Engine::Open(eo, std::move(store), &clock_);
    ASSERT_TRUE(engine.ok()) << engine.error.message;
    engine_ = std::move(engine.value);
    options_.listen_address = "127.0.0.1:0";
    options_.max_poll_seconds = 1;
  }
  void StartGateway() {
    auto gw = aws::Gateway::Start(engine_.get(), options_);
    ASSERT_TRUE(gw.ok()) << gw.error.message;
    gateway_ = std::move(gw.value);
  }
  void TearDown() override {
    if (gateway_) gateway_->StopAccepting();
    if (engine_) engine_->Stop();
    gateway_.reset();
    engine_.reset();
  }

  TempDir dir_{"tw-gw"};
  ManualClock clock_{kStartMs};
  std::unique_ptr<Engine> engine_;
  aws::GatewayOptions options_;
  std::unique_ptr<aws::Gateway> gateway_;
};

}  // namespace tw::rpc::testing

// The JSON forms of the engine's answers, shared by the CLI (tools/tokenwheel.cc prints them)
// and the gateway's TokenWheel.* operations (rpc/aws/protocol.cc answers with them), so that
// one answer reads the same everywhere. Keys are lowerCamelCase as in AWS's JSON; times are
// epoch seconds (numbers with a fractional part); a field that is not set is left out.
//
// Pure functions, any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/types.h"

namespace tw::rpc {

// Epoch milliseconds as AWS epoch seconds.
double EpochSeconds(int64_t ms);

nlohmann::json ActivityJson(const ActivityInfo& a);        // activityArn, name, creationDate
nlohmann::json CompletionJson(const CompletionReply& r);   // {} or {"duplicate": true}
nlohmann::json DescriptionJson(const TaskDescription& d);  // state, kind, dates, input, ...
nlohmann::json EventJson(const OutcomeEvent& e);           // sequence, taskToken, state, ...
nlohmann::json StorageJson(const StorageHealth& h);        // ok, failures, recoveries, error
// The engine's part of a stats answer; a front end adds its own keys.
nlohmann::json EngineStatsJson(const EngineStats& s);
// A typed error with tokenwheel's detail: error (the AWS code), message, and for a refused
// completion reason, recordedState, timeoutKind / recordedOutput, recordedError, recordedCause.
nlohmann::json ErrorJson(const Error& e);

// j.dump() that never throws: bytes that are not UTF-8 (in a correlation, say) become U+FFFD.
std::string Dump(const nlohmann::json& j);

}  // namespace tw::rpc

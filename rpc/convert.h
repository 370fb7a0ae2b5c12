// Conversions between the engine's vocabulary (engine/engine.h, engine/types.h) and the wire
// types of rpc/tokenwheel.capnp. Shared by the server and the client; private to rpc/.
//
// Every Fill* writes a complete struct; every Read* copies out of the message (nothing returned
// points into it). Encoding then decoding gives back the same value (the round trip is tested).
#pragma once

#include <capnp/blob.h>
#include <kj/exception.h>

#include <string>

#include "engine/engine.h"
#include "rpc/tokenwheel.capnp.h"

namespace tw::rpc {

// ---- Text and Data ----
inline std::string ToString(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
inline std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
inline capnp::Text::Reader AsText(const std::string& s) {
  return capnp::Text::Reader(s.c_str(), s.size());
}
inline capnp::Data::Reader AsData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// ---- Enums ----
proto::TaskState ToProto(TaskState s);
TaskState FromProto(proto::TaskState s);
proto::TimeoutKind ToProto(TimeoutKind k);
TimeoutKind FromProto(proto::TimeoutKind k);
proto::ErrorCode ToProto(ErrorCode c);
ErrorCode FromProto(proto::ErrorCode c);

// ---- Errors ----
void FillError(const Error& e, proto::Error::Builder out);
Error ReadError(proto::Error::Reader in);

// The engine codes a single call answers with an exception instead of a typed error: overload
// (OVERLOADED) and bugs (FAILED), logistics rather than outcomes (see the schema's header). A
// storage failure or a stopping engine (kUnavailable) is a typed `unavailable` error, which
// says why. The client's side of the same line is IsTransportError (rpc/client.h).
bool IsLogisticsError(ErrorCode c);
// OVERLOADED, DISCONNECTED (kUnavailable: the stats call of a stopping server) or FAILED.
kj::Exception ToException(const Error& e);
// The other way, on the client: the code a transport exception stands for.
Error FromException(const kj::Exception& e);

// ---- Structs ----
void FillActivity(const ActivityInfo& a, proto::ActivityInfo::Builder out);
ActivityInfo ReadActivity(proto::ActivityInfo::Reader in);

void FillIssueRequest(const IssueTaskRequest& r, proto::IssueTaskRequest::Builder out);
IssueTaskRequest ReadIssueRequest(proto::IssueTaskRequest::Reader in);

void FillSuccessRequest(const SendTaskSuccessRequest& r, proto::SuccessRequest::Builder out);
SendTaskSuccessRequest ReadSuccessRequest(proto::SuccessRequest::Reader in);
void FillFailureRequest(const SendTaskFailureRequest& r, proto::FailureRequest::Builder out);
SendTaskFailureRequest ReadFailureRequest(proto::FailureRequest::Reader in);

void FillDescription(const TaskDescription& d, proto::TaskDescription::Builder out);
TaskDescription ReadDescription(proto::TaskDescription::Reader in);

void FillEvent(const OutcomeEvent& e, proto::OutcomeEvent::Builder out);
OutcomeEvent ReadEvent(proto::OutcomeEvent::Reader in);
// Bytes an event takes on the wire, roughly (for chunking).
size_t EventWireBytes(const OutcomeEvent& e);

void FillEngineStats(const EngineStats& s, proto::Stats::Builder out);
EngineStats ReadEngineStats(proto::Stats::Reader in);
void FillStorageHealth(const StorageHealth& h, proto::StorageHealth::Builder out);
StorageHealth ReadStorageHealth(proto::StorageHealth::Reader in);

// ---- Result unions ----
// Each result struct of the schema is a union of `ok` and `error`; these fill the error arm.
template <typename Builder>
void FillErrorArm(const Error& e, Builder out) {
  FillError(e, out.initError());
}

}  // namespace tw::rpc

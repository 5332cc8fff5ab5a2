//! Message kinds: one module per kind, each a serde struct encoded as packed CBOR.
//!
//! The field order of every struct *is* the wire format (packed CBOR keys a field by its
//! declaration index): never reorder or remove fields; add optional fields at the end.

pub mod birth;
pub mod command;
pub mod console_state;
pub mod enroll;
pub mod event;
pub mod heartbeat;
pub mod inventory;
pub mod receipt;
pub mod result;
pub mod status;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use birth::{AppState, AppStatus, Birth};
pub use command::{Command, CommandAction, ConfigValue, MAX_SCRIPT_BYTES};
pub use console_state::ConsoleState;
pub use enroll::{EnrollDecision, EnrollRequest, EnrollResponse};
pub use event::{Event, EventLevel};
pub use heartbeat::{Deadband, Heartbeat, HeartbeatReporter, Vitals};
pub use inventory::{
    inventory_digest, InventoryAck, InventoryChunk, InventoryDelta, Package, CHUNK_PACKAGES,
};
pub use receipt::{EventReceipt, MAX_RECEIPT_IDS};
pub use result::{CommandOutcome, CommandProgress, CommandResult};
pub use status::Status;

use crate::error::DecodeError;

/// The wire version this crate speaks.
pub const WIRE_VERSION: u8 = 1;

/// The largest payload any decoder accepts. Checked before any CBOR is parsed.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Every message kind, with its number in the header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Status = 0,
    Birth = 1,
    Heartbeat = 2,
    InventoryChunk = 3,
    InventoryDelta = 4,
    Event = 5,
    CommandResult = 6,
    CommandProgress = 7,
    EnrollRequest = 8,
    Command = 9,
    EnrollResponse = 10,
    ConsoleState = 11,
    InventoryAck = 12,
    EventReceipt = 13,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Status,
        Kind::Birth,
        Kind::Heartbeat,
        Kind::InventoryChunk,
        Kind::InventoryDelta,
        Kind::Event,
        Kind::CommandResult,
        Kind::CommandProgress,
        Kind::EnrollRequest,
        Kind::Command,
        Kind::EnrollResponse,
        Kind::ConsoleState,
        Kind::InventoryAck,
        Kind::EventReceipt,
    ];

    /// The header byte that precedes the COSE structure.
    pub fn header(self) -> u8 {
        (WIRE_VERSION << 4) | self as u8
    }

    pub fn from_header(byte: u8) -> Result<Kind, DecodeError> {
        let version = byte >> 4;
        if version != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = byte & 0x0f;
        Kind::ALL
            .get(usize::from(kind))
            .copied()
            .ok_or(DecodeError::UnknownKind(kind))
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Birth => "birth",
            Kind::Heartbeat => "heartbeat",
            Kind::InventoryChunk => "inventory_chunk",
            Kind::InventoryDelta => "inventory_delta",
            Kind::Event => "event",
            Kind::CommandResult => "command_result",
            Kind::CommandProgress => "command_progress",
            Kind::EnrollRequest => "enroll_request",
            Kind::Command => "command",
            Kind::EnrollResponse => "enroll_response",
            Kind::ConsoleState => "console_state",
            Kind::InventoryAck => "inventory_ack",
            Kind::EventReceipt => "event_receipt",
        }
    }
}

/// Telemetry an agent sends, sealed with its per-agent MAC key (COSE_Mac0).
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    Status(Status),
    Birth(Birth),
    Heartbeat(Heartbeat),
    InventoryChunk(InventoryChunk),
    InventoryDelta(InventoryDelta),
    Event(Event),
    CommandResult(CommandResult),
    CommandProgress(CommandProgress),
}

/// Messages the console signs (COSE_Sign1).
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleMessage {
    Command(Command),
    EnrollResponse(EnrollResponse),
    ConsoleState(ConsoleState),
    InventoryAck(InventoryAck),
    EventReceipt(EventReceipt),
}

/// Every message kind on the wire: the closed set.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Agent(AgentMessage),
    EnrollRequest(EnrollRequest),
    Console(ConsoleMessage),
}

impl AgentMessage {
    pub fn kind(&self) -> Kind {
        match self {
            AgentMessage::Status(_) => Kind::Status,
            AgentMessage::Birth(_) => Kind::Birth,
            AgentMessage::Heartbeat(_) => Kind::Heartbeat,
            AgentMessage::InventoryChunk(_) => Kind::InventoryChunk,
            AgentMessage::InventoryDelta(_) => Kind::InventoryDelta,
            AgentMessage::Event(_) => Kind::Event,
            AgentMessage::CommandResult(_) => Kind::CommandResult,
            AgentMessage::CommandProgress(_) => Kind::CommandProgress,
        }
    }

    /// `(bd_seq, seq)`: which connection sent it, and its place within that connection.
    pub fn sequence(&self) -> (u64, u64) {
        match self {
            AgentMessage::Status(m) => (m.bd_seq, m.seq),
            AgentMessage::Birth(m) => (m.bd_seq, m.seq),
            AgentMessage::Heartbeat(m) => (m.bd_seq, m.seq),
            AgentMessage::InventoryChunk(m) => (m.bd_seq, m.seq),
            AgentMessage::InventoryDelta(m) => (m.bd_seq, m.seq),
            AgentMessage::Event(m) => (m.bd_seq, m.seq),
            AgentMessage::CommandResult(m) => (m.bd_seq, m.seq),
            AgentMessage::CommandProgress(m) => (m.bd_seq, m.seq),
        }
    }

    /// Sets `(bd_seq, seq)`. The agent stamps a message when it seals it for sending, so a
    /// queued message carries the numbers of the connection that delivers it.
    pub fn stamp(&mut self, bd_seq: u64, seq: u64) {
        let (b, s) = match self {
            AgentMessage::Status(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::Birth(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::Heartbeat(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::InventoryChunk(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::InventoryDelta(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::Event(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::CommandResult(m) => (&mut m.bd_seq, &mut m.seq),
            AgentMessage::CommandProgress(m) => (&mut m.bd_seq, &mut m.seq),
        };
        *b = bd_seq;
        *s = seq;
    }

    pub(crate) fn encode_body(&self) -> Vec<u8> {
        match self {
            AgentMessage::Status(m) => encode(m),
            AgentMessage::Birth(m) => encode(m),
            AgentMessage::Heartbeat(m) => encode(m),
            AgentMessage::InventoryChunk(m) => encode(m),
            AgentMessage::InventoryDelta(m) => encode(m),
            AgentMessage::Event(m) => encode(m),
            AgentMessage::CommandResult(m) => encode(m),
            AgentMessage::CommandProgress(m) => encode(m),
        }
    }

    pub(crate) fn decode_body(kind: Kind, body: &[u8]) -> Result<AgentMessage, DecodeError> {
        Ok(match kind {
            Kind::Status => AgentMessage::Status(decode(body)?),
            Kind::Birth => AgentMessage::Birth(decode(body)?),
            Kind::Heartbeat => AgentMessage::Heartbeat(decode(body)?),
            Kind::InventoryChunk => AgentMessage::InventoryChunk(decode(body)?),
            Kind::InventoryDelta => AgentMessage::InventoryDelta(decode(body)?),
            Kind::Event => AgentMessage::Event(decode(body)?),
            Kind::CommandResult => AgentMessage::CommandResult(decode(body)?),
            Kind::CommandProgress => AgentMessage::CommandProgress(decode(body)?),
            got => {
                return Err(DecodeError::WrongKind {
                    expected: "agent telemetry",
                    got,
                })
            }
        })
    }

    /// Encodes the message body (without envelope) for local storage, e.g. the agent's
    /// store-and-forward queue. The result starts with the kind's header byte.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut out = vec![self.kind().header()];
        out.extend_from_slice(&self.encode_body());
        out
    }

    /// Decodes what [`AgentMessage::to_stored`] produced.
    pub fn from_stored(bytes: &[u8]) -> Result<AgentMessage, DecodeError> {
        let (&header, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        AgentMessage::decode_body(Kind::from_header(header)?, body)
    }
}

impl ConsoleMessage {
    pub fn kind(&self) -> Kind {
        match self {
            ConsoleMessage::Command(_) => Kind::Command,
            ConsoleMessage::EnrollResponse(_) => Kind::EnrollResponse,
            ConsoleMessage::ConsoleState(_) => Kind::ConsoleState,
            ConsoleMessage::InventoryAck(_) => Kind::InventoryAck,
            ConsoleMessage::EventReceipt(_) => Kind::EventReceipt,
        }
    }

    pub(crate) fn encode_body(&self) -> Vec<u8> {
        match self {
            ConsoleMessage::Command(m) => encode(m),
            ConsoleMessage::EnrollResponse(m) => encode(m),
            ConsoleMessage::ConsoleState(m) => encode(m),
            ConsoleMessage::InventoryAck(m) => encode(m),
            ConsoleMessage::EventReceipt(m) => encode(m),
        }
    }

    pub(crate) fn decode_body(kind: Kind, body: &[u8]) -> Result<ConsoleMessage, DecodeError> {
        Ok(match kind {
            Kind::Command => ConsoleMessage::Command(decode(body)?),
            Kind::EnrollResponse => ConsoleMessage::EnrollResponse(decode(body)?),
            Kind::ConsoleState => ConsoleMessage::ConsoleState(decode(body)?),
            Kind::InventoryAck => ConsoleMessage::InventoryAck(decode(body)?),
            Kind::EventReceipt => ConsoleMessage::EventReceipt(decode(body)?),
            got => {
                return Err(DecodeError::WrongKind {
                    expected: "console message",
                    got,
                })
            }
        })
    }
}

/// Packed CBOR: struct fields keyed by index, enum variants by index.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::ser::to_vec_packed(value).expect("our message types always serialize")
}

/// Strict decode: trailing bytes and type mismatches are errors.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    serde_cbor::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_byte_round_trips_for_every_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_header(kind.header()), Ok(kind));
            assert_eq!(kind.header() >> 4, 1);
        }
    }

    #[test]
    fn unknown_version_and_kind_are_typed_errors() {
        assert_eq!(
            Kind::from_header(0x22),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            Kind::from_header(0x02),
            Err(DecodeError::UnsupportedVersion(0))
        );
        assert_eq!(Kind::from_header(0x1e), Err(DecodeError::UnknownKind(14)));
        assert_eq!(Kind::from_header(0x1f), Err(DecodeError::UnknownKind(15)));
    }
}

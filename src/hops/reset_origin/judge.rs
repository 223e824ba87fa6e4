//! The pure judgement of a reset's origin: where the target's TTL was read ([`TtlSource`]), what
//! the two TTLs say ([`judge`], [`Judgement`]) and what the check found ([`ResetOrigin`]). The
//! raw-socket probe (`linux.rs`) and the verdicts (`mod.rs`) both read it from here, so the probe
//! never imports the module that runs it.

/// Where the target's own TTL was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlSource {
    /// The SYN-ACK of a port of the target that connected earlier in this run.
    SynAck,
    /// An ICMP echo reply.
    IcmpEcho,
}

impl TtlSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TtlSource::SynAck => "syn_ack",
            TtlSource::IcmpEcho => "icmp_echo",
        }
    }
}

/// What the two TTLs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Same distance, same initial TTL: the target's own stack sent the reset.
    Target,
    /// The reset crossed fewer routers than the target's packets: a device on the path sent it,
    /// this many routers before the target.
    Path { hops_before_target: u8 },
    /// The reset crossed more routers than the target's packets (asymmetric routing, or a
    /// device that raises TTLs): nothing to conclude.
    FartherThanTarget,
    /// Same distance but another initial TTL: a second device beside the target, or a stack
    /// that uses different initial TTLs for TCP and ICMP. Nothing to conclude.
    OtherInitialTtl,
}

/// What the origin check found for one refused attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetOrigin {
    /// A loopback target: this host's own stack sent the reset; nothing to compare.
    ThisHost,
    /// Both TTLs were read and compared.
    Compared {
        reset_ttl: u8,
        target_ttl: u8,
        target_ttl_from: TtlSource,
        judgement: Judgement,
    },
    /// Not checked, and why (no privilege, this platform, IPv6, no TTL of the target...). The
    /// reset's TTL when it was read.
    NotChecked { reset_ttl: Option<u8>, why: String },
}

/// The initial TTL a sender most likely used: the next common one (32, 64, 128, 255) at or
/// above what arrived. Stacks use these (Linux and most routers 64, Windows 128, network gear
/// 255); routes between zones are far shorter than the gaps between them.
pub fn initial_ttl(observed: u8) -> u8 {
    [32, 64, 128]
        .into_iter()
        .find(|i| *i >= observed)
        .unwrap_or(255)
}

/// Routers a packet crossed: its initial TTL minus what arrived.
pub fn hops_crossed(observed: u8) -> u8 {
    initial_ttl(observed) - observed
}

/// Pure: where the reset came from, from its TTL and the target's own.
pub fn judge(reset_ttl: u8, target_ttl: u8) -> Judgement {
    let (reset_hops, target_hops) = (hops_crossed(reset_ttl), hops_crossed(target_ttl));
    if reset_hops < target_hops {
        Judgement::Path {
            hops_before_target: target_hops - reset_hops,
        }
    } else if reset_hops > target_hops {
        Judgement::FartherThanTarget
    } else if initial_ttl(reset_ttl) == initial_ttl(target_ttl) {
        Judgement::Target
    } else {
        Judgement::OtherInitialTtl
    }
}

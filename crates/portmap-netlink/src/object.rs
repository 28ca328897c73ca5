//! Typed nftables objects as they travel over netlink: tables, chains, rules and their expressions,
//! sets/maps and their elements. These are plain values; `batch` encodes them and `dump` decodes them.
//!
//! Nothing here knows what a port mapping is. Byte strings (keys, data, cmp operands) are in the exact
//! layout the kernel expects (network byte order for addresses and ports, host order for registers
//! that nft loads as host order, each concatenation field padded to 4 bytes).

/// Address family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `inet` (1): IPv4 and IPv6.
    Inet,
    /// `ip` (2).
    Ipv4,
    /// `ip6` (10).
    Ipv6,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }

    /// The family for an `NFPROTO_*` number portmap uses.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Family::Inet),
            2 => Some(Family::Ipv4),
            10 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// `inet`, `ip` or `ip6`, as nft spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }
}

/// A table (`NFT_MSG_NEWTABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Family.
    pub family: Family,
    /// Name (`NFTA_TABLE_NAME`).
    pub name: String,
    /// `NFTA_TABLE_FLAGS` (0 for a normal table).
    pub flags: u32,
    /// `NFTA_TABLE_USERDATA` (nft stores a comment as TLV type 0, see [`crate::udata`]).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_TABLE_HANDLE` (read back only; ignored when adding).
    pub handle: Option<u64>,
    /// `NFTA_TABLE_OWNER`: the netlink port id of the socket that owns the table (read back only,
    /// and only for a table with [`table_flags::OWNER`]; the kernel takes the creating socket's).
    pub owner: Option<u32>,
}

/// `NFT_TABLE_F_*`: the flags of a table.
pub mod table_flags {
    /// `NFT_TABLE_F_DORMANT`: the table's base chains are unregistered from their hooks.
    pub const DORMANT: u32 = 0x1;
    /// `NFT_TABLE_F_OWNER` (Linux 5.12+): the table belongs to the netlink socket that created it
    /// (or adopted it); the kernel refuses every other socket's change with `EPERM`, `flush
    /// ruleset` skips it, and it is removed when that socket closes — unless [`PERSIST`].
    pub const OWNER: u32 = 0x2;
    /// `NFT_TABLE_F_PERSIST` (Linux 6.9+): with [`OWNER`], the table outlives its owner's socket,
    /// left without an owner ("orphaned"); a socket can then adopt it by setting [`OWNER`] again.
    pub const PERSIST: u32 = 0x4;
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `NF_INET_PRE_ROUTING` (0).
    Prerouting,
    /// `NF_INET_LOCAL_IN` (1).
    Input,
    /// `NF_INET_FORWARD` (2).
    Forward,
    /// `NF_INET_LOCAL_OUT` (3).
    Output,
    /// `NF_INET_POST_ROUTING` (4).
    Postrouting,
    /// Any other hook (`NF_INET_INGRESS` 5, ...), kept by number so a dump of a table someone
    /// extended by hand still decodes.
    Other(u32),
}

/// Verdict a base chain applies when no rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `NF_ACCEPT` (1).
    Accept,
    /// `NF_DROP` (0).
    Drop,
}

/// The hook part of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// Hook number.
    pub hook: Hook,
    /// Priority (`dstnat` is -100, `filter` 0, `srcnat` 100).
    pub priority: i32,
    /// `NFTA_CHAIN_TYPE`: `filter`, `nat` or `route`.
    pub chain_type: String,
    /// Policy.
    pub policy: Policy,
}

/// A chain (`NFT_MSG_NEWCHAIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Family of the table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// Present for base chains.
    pub base: Option<BaseChain>,
    /// `NFTA_CHAIN_USERDATA` (comment TLV).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_CHAIN_HANDLE` (read back only).
    pub handle: Option<u64>,
}

/// An nftables register. `Verdict` is register 0; `R1`..`R4` are the 128-bit registers 1–4; `R32(n)`
/// is the 32-bit register `NFT_REG32_00 + n` (kernel number 8 + n, n in 0..16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Register {
    /// `NFT_REG_VERDICT` (0).
    Verdict,
    /// 128-bit register 1 (also `NFT_REG32_00`..03 seen as 32-bit).
    R1,
    /// 128-bit register 2.
    R2,
    /// 128-bit register 3.
    R3,
    /// 128-bit register 4.
    R4,
    /// 32-bit register `NFT_REG32_00 + n`: kernel number `8 + n`.
    R32(u8),
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP`.
    Drop,
    /// `NFT_CONTINUE` (-1).
    Continue,
    /// `NFT_RETURN` (-5).
    Return,
    /// `NFT_JUMP` (-3) to a chain.
    Jump(String),
    /// `NFT_GOTO` (-4) to a chain.
    Goto(String),
}

/// `NFTA_DATA_*` payload: plain bytes or a verdict; for an element of an object map, the name of
/// the stateful object it maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// `NFTA_DATA_VALUE`.
    Value(Vec<u8>),
    /// `NFTA_DATA_VERDICT`.
    Verdict(Verdict),
    /// `NFTA_SET_ELEM_OBJREF`: an element of an object map (`type … : counter`) names an object
    /// of its table. Only meaningful as element data.
    Object(String),
}

/// `NFT_META_*` keys portmap uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// `NFT_META_L4PROTO` (16).
    L4Proto,
    /// `NFT_META_NFPROTO` (15).
    NfProto,
    /// `NFT_META_IIFNAME` (6).
    IifName,
    /// `NFT_META_OIFNAME` (7).
    OifName,
    /// Any other `NFT_META_*` key by number (e.g. `NFT_META_IIFTYPE` 8).
    Other(u32),
}

/// Comparison operator of `cmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `NFT_CMP_EQ`.
    Eq,
    /// `NFT_CMP_NEQ`.
    Neq,
    /// `NFT_CMP_LT`.
    Lt,
    /// `NFT_CMP_LTE`.
    Lte,
    /// `NFT_CMP_GT`.
    Gt,
    /// `NFT_CMP_GTE`.
    Gte,
}

/// Header a `payload` expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    /// `NFT_PAYLOAD_LL_HEADER` (0).
    LinkLayer,
    /// `NFT_PAYLOAD_NETWORK_HEADER` (1).
    Network,
    /// `NFT_PAYLOAD_TRANSPORT_HEADER` (2).
    Transport,
    /// `NFT_PAYLOAD_INNER_HEADER` (3).
    Inner,
}

/// NAT type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    /// `NFT_NAT_SNAT` (0).
    Snat,
    /// `NFT_NAT_DNAT` (1).
    Dnat,
}

/// One rule expression. Field names follow the kernel attributes (`NFTA_<EXPR>_<FIELD>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `meta`: load a meta key into `dreg`.
    Meta {
        /// Key.
        key: MetaKey,
        /// Destination register.
        dreg: Register,
    },
    /// `cmp`: compare `sreg` with `data`; on mismatch the rule stops.
    Cmp {
        /// Source register.
        sreg: Register,
        /// Operator.
        op: CmpOp,
        /// Operand bytes.
        data: Vec<u8>,
    },
    /// `payload`: load `len` bytes at `offset` of `base` into `dreg`.
    Payload {
        /// Header.
        base: PayloadBase,
        /// Byte offset.
        offset: u32,
        /// Length in bytes.
        len: u32,
        /// Destination register.
        dreg: Register,
    },
    /// `bitwise` (mask/xor form): `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        /// Source register.
        sreg: Register,
        /// Destination register.
        dreg: Register,
        /// Length in bytes.
        len: u32,
        /// Mask bytes (`len` long).
        mask: Vec<u8>,
        /// Xor bytes (`len` long).
        xor: Vec<u8>,
    },
    /// `lookup`: look `sreg` up in a set; with `dreg` it is a map lookup (a verdict map uses
    /// `Register::Verdict`).
    Lookup {
        /// Source register.
        sreg: Register,
        /// Destination register for maps.
        dreg: Option<Register>,
        /// Set name.
        set: String,
        /// `NFTA_LOOKUP_SET_ID` when the set is created in the same batch (0 when unused; the
        /// kernel does not report it back, so dumps have 0).
        set_id: u32,
        /// `NFT_LOOKUP_F_INV` (1) when the match is inverted (`!= @set`).
        invert: bool,
    },
    /// `immediate`: load data or a verdict into `dreg`.
    Immediate {
        /// Destination register (`Register::Verdict` for verdicts).
        dreg: Register,
        /// Data.
        data: Data,
    },
    /// `nat`. Read back, the kernel reports `addr_max`/`proto_max` equal to the minimum when
    /// they were not sent, and adds `NF_NAT_RANGE_MAP_IPS` (1) / `NF_NAT_RANGE_PROTO_SPECIFIED` (2)
    /// to `flags` for the registers given.
    Nat {
        /// SNAT or DNAT.
        nat_type: NatType,
        /// `NFTA_NAT_FAMILY` (`NFPROTO_IPV4` 2 or `NFPROTO_IPV6` 10).
        family: u8,
        /// Register holding the minimum address.
        addr_min: Option<Register>,
        /// Register holding the maximum address.
        addr_max: Option<Register>,
        /// Register holding the minimum port.
        proto_min: Option<Register>,
        /// Register holding the maximum port.
        proto_max: Option<Register>,
        /// `NFTA_NAT_FLAGS` (`NF_NAT_RANGE_*`), 0 when absent.
        flags: u32,
    },
    /// `masq`.
    Masq {
        /// `NFTA_MASQ_FLAGS`, 0 when absent.
        flags: u32,
    },
    /// `counter` (values are what the kernel reports; when adding, zero values are not sent, as
    /// nft does, and non-zero ones preset the counter).
    Counter {
        /// Bytes.
        bytes: u64,
        /// Packets.
        packets: u64,
    },
    /// `ct`: load a conntrack key into `dreg`.
    Ct {
        /// `NFT_CT_*` key (`NFT_CT_STATE` 0, `NFT_CT_DIRECTION` 1, `NFT_CT_STATUS` 2, ...).
        key: u32,
        /// Destination register.
        dreg: Register,
        /// `NFTA_CT_DIRECTION` when present.
        direction: Option<u8>,
    },
    /// `objref` in its map form: the object the map `set` gives for the key in `sreg` is run (a
    /// counter counts the packet; a limit over its rate lets the rule go on). A key the map does
    /// not hold ends the rule.
    Objref {
        /// Source register of the key.
        sreg: Register,
        /// The object map.
        set: String,
        /// `NFTA_OBJREF_SET_ID` when the map is created in the same batch (0 when unused; dumps
        /// have 0).
        set_id: u32,
    },
    /// `log`: hand the packet to nflog `group` with `prefix` (`log prefix "…" group N`).
    Log {
        /// `NFTA_LOG_GROUP`.
        group: Option<u16>,
        /// `NFTA_LOG_PREFIX`.
        prefix: Option<String>,
    },
    /// `fib`: routing lookup.
    Fib {
        /// `NFTA_FIB_FLAGS` (`NFTA_FIB_F_SADDR` 1, `DADDR` 2, `MARK` 4, `IIF` 8, `OIF` 16, `PRESENT` 32).
        flags: u32,
        /// `NFTA_FIB_RESULT` (`NFT_FIB_RESULT_OIF` 1, `OIFNAME` 2, `ADDRTYPE` 3).
        result: u32,
        /// Destination register.
        dreg: Register,
    },
    /// An expression this layer does not decode, kept by name so a dump never fails on it.
    Unknown {
        /// `NFTA_EXPR_NAME`.
        name: String,
    },
}

/// A rule (`NFT_MSG_NEWRULE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Family of the table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Expressions, in order.
    pub exprs: Vec<Expr>,
    /// `NFTA_RULE_USERDATA` (comment TLV).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_RULE_HANDLE` (read back; used to delete).
    pub handle: Option<u64>,
}

/// `NFT_SET_*` flags.
pub mod set_flags {
    /// `NFT_SET_ANONYMOUS`.
    pub const ANONYMOUS: u32 = 0x1;
    /// `NFT_SET_CONSTANT`.
    pub const CONSTANT: u32 = 0x2;
    /// `NFT_SET_INTERVAL`.
    pub const INTERVAL: u32 = 0x4;
    /// `NFT_SET_MAP`.
    pub const MAP: u32 = 0x8;
    /// `NFT_SET_TIMEOUT`.
    pub const TIMEOUT: u32 = 0x10;
    /// `NFT_SET_EVAL`.
    pub const EVAL: u32 = 0x20;
    /// `NFT_SET_OBJECT`.
    pub const OBJECT: u32 = 0x40;
    /// `NFT_SET_CONCAT`.
    pub const CONCAT: u32 = 0x80;
}

/// `NFT_SET_ELEM_*` flags.
pub mod elem_flags {
    /// `NFT_SET_ELEM_INTERVAL_END`.
    pub const INTERVAL_END: u32 = 0x1;
}

/// A set or map (`NFT_MSG_NEWSET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Family of the table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Set name.
    pub name: String,
    /// `NFTA_SET_FLAGS` ([`set_flags`]).
    pub flags: u32,
    /// `NFTA_SET_KEY_TYPE` (nft datatype id; a concatenation is `(t1 << 6) | t2`...).
    pub key_type: u32,
    /// `NFTA_SET_KEY_LEN` in bytes.
    pub key_len: u32,
    /// `NFTA_SET_DATA_TYPE` for maps (`0xffffff00` for verdict maps).
    pub data_type: Option<u32>,
    /// `NFTA_SET_DATA_LEN` for maps (nft sends 0 for verdict maps; the kernel reports 16).
    pub data_len: Option<u32>,
    /// `NFTA_SET_ID`: an id unique in the batch so later messages in it can refer to the new set
    /// (0: not sent; dumps have 0).
    pub id: u32,
    /// `NFTA_SET_DESC_CONCAT` field lengths in bytes (unpadded), empty when not a concatenation.
    /// Sent only when non-empty; nft 1.0.6 sends it only for interval (pipapo) concatenations,
    /// not for the hash maps portmap uses, so leave it empty there to match `nft -f`.
    pub concat: Vec<u32>,
    /// `NFTA_SET_USERDATA` (nft keeps key/data byte order and comment here, see [`crate::udata`]).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_SET_HANDLE` (read back only).
    pub handle: Option<u64>,
    /// `NFTA_SET_OBJ_TYPE` of an object map ([`set_flags::OBJECT`]): the type of the objects its
    /// elements name ([`object_type`]).
    pub obj_type: Option<u32>,
}

/// `NFT_OBJECT_*`: types of stateful objects.
pub mod object_type {
    /// `NFT_OBJECT_COUNTER`.
    pub const COUNTER: u32 = 1;
    /// `NFT_OBJECT_QUOTA`.
    pub const QUOTA: u32 = 2;
    /// `NFT_OBJECT_LIMIT`.
    pub const LIMIT: u32 = 4;
}

/// `NFT_LIMIT_*` types and flags of a limit.
pub mod limit {
    /// `NFT_LIMIT_PKTS`: the rate counts packets.
    pub const PKTS: u32 = 0;
    /// `NFT_LIMIT_PKT_BYTES`: the rate counts bytes.
    pub const PKT_BYTES: u32 = 1;
    /// `NFT_LIMIT_F_INV`: `rate over`: matches when over the rate.
    pub const F_INV: u32 = 1;
}

/// What a stateful object holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A counter (`NFT_OBJECT_COUNTER`) and its values.
    Counter {
        /// Packets counted.
        packets: u64,
        /// Bytes counted.
        bytes: u64,
    },
    /// A limit (`NFT_OBJECT_LIMIT`): `rate` per `unit` seconds, with `burst`.
    Limit {
        /// Rate (packets, or bytes for [`limit::PKT_BYTES`]) per unit.
        rate: u64,
        /// Unit in seconds (1, 60, 3600, 86400).
        unit: u64,
        /// Burst.
        burst: u32,
        /// [`limit::PKTS`] or [`limit::PKT_BYTES`].
        limit_type: u32,
        /// [`limit::F_INV`] for `rate over`.
        flags: u32,
    },
    /// Any other type, by number (kept so a dump never fails on it).
    Other(u32),
}

impl ObjectKind {
    /// The `NFT_OBJECT_*` type.
    pub fn type_number(&self) -> u32 {
        match self {
            ObjectKind::Counter { .. } => object_type::COUNTER,
            ObjectKind::Limit { .. } => object_type::LIMIT,
            ObjectKind::Other(n) => *n,
        }
    }
}

/// A named stateful object of a table (`NFT_MSG_NEWOBJ`): `counter NAME { … }`, `limit NAME { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Family of the table.
    pub family: Family,
    /// Table name.
    pub table: String,
    /// Object name.
    pub name: String,
    /// Type and content. A counter added with non-zero values starts from them.
    pub kind: ObjectKind,
    /// `NFTA_OBJ_USERDATA` (comment TLV).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_OBJ_HANDLE` (read back only).
    pub handle: Option<u64>,
}

/// A set element (`NFTA_LIST_ELEM`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// `NFTA_SET_ELEM_KEY` value bytes (empty for a catch-all element).
    pub key: Vec<u8>,
    /// `NFTA_SET_ELEM_KEY_END` for concatenated ranges.
    pub key_end: Option<Vec<u8>>,
    /// `NFTA_SET_ELEM_DATA` for map elements.
    pub data: Option<Data>,
    /// `NFTA_SET_ELEM_FLAGS` ([`elem_flags`]).
    pub flags: u32,
    /// `NFTA_SET_ELEM_USERDATA` (comment TLV).
    pub userdata: Option<Vec<u8>>,
    /// `NFTA_SET_ELEM_TIMEOUT`: milliseconds after being added that the kernel removes the
    /// element (only in a set with [`set_flags::TIMEOUT`]); `None`: never.
    pub timeout: Option<u64>,
    /// `NFTA_SET_ELEM_EXPIRATION` (read back only, never sent): milliseconds left until the
    /// kernel removes the element.
    pub expiration: Option<u64>,
}

impl Hook {
    /// The `NF_INET_*` hook number.
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
            Hook::Other(n) => n,
        }
    }

    /// The hook for an `NF_INET_*` number.
    pub fn from_number(n: u32) -> Self {
        match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            n => Hook::Other(n),
        }
    }
}

impl Policy {
    /// `NF_ACCEPT` (1) or `NF_DROP` (0).
    pub fn number(self) -> u32 {
        match self {
            Policy::Accept => 1,
            Policy::Drop => 0,
        }
    }

    /// The policy for `NF_ACCEPT`/`NF_DROP`.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(Policy::Accept),
            0 => Some(Policy::Drop),
            _ => None,
        }
    }
}

impl Register {
    /// The kernel's register number: `Verdict` 0, `R1`..`R4` 1..4, `R32(n)` 8 + n.
    pub fn number(self) -> u32 {
        match self {
            Register::Verdict => 0,
            Register::R1 => 1,
            Register::R2 => 2,
            Register::R3 => 3,
            Register::R4 => 4,
            Register::R32(n) => 8 + u32::from(n),
        }
    }

    /// The register for a kernel register number.
    pub fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => Register::Verdict,
            1 => Register::R1,
            2 => Register::R2,
            3 => Register::R3,
            4 => Register::R4,
            8..=23 => Register::R32((n - 8) as u8),
            _ => return None,
        })
    }

    /// The form the kernel reports back: it stores registers as 32-bit slots and dumps a slot
    /// that starts a 128-bit register as that register, so `R32(0)` reads back as `R1`,
    /// `R32(4)` as `R2`, and so on. Every other register reads back as written.
    #[must_use]
    pub fn canonical(self) -> Self {
        match self {
            Register::R32(0) => Register::R1,
            Register::R32(4) => Register::R2,
            Register::R32(8) => Register::R3,
            Register::R32(12) => Register::R4,
            other => other,
        }
    }
}

impl MetaKey {
    /// The `NFT_META_*` number.
    pub fn number(self) -> u32 {
        match self {
            MetaKey::L4Proto => 16,
            MetaKey::NfProto => 15,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::Other(n) => n,
        }
    }

    /// The key for an `NFT_META_*` number (named variants where there is one).
    pub fn from_number(n: u32) -> Self {
        match n {
            16 => MetaKey::L4Proto,
            15 => MetaKey::NfProto,
            6 => MetaKey::IifName,
            7 => MetaKey::OifName,
            other => MetaKey::Other(other),
        }
    }
}

impl CmpOp {
    /// The `NFT_CMP_*` number.
    pub fn number(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }

    /// The operator for an `NFT_CMP_*` number.
    pub fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

impl PayloadBase {
    /// The `NFT_PAYLOAD_*_HEADER` number.
    pub fn number(self) -> u32 {
        match self {
            PayloadBase::LinkLayer => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
            PayloadBase::Inner => 3,
        }
    }

    /// The base for an `NFT_PAYLOAD_*_HEADER` number.
    pub fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => PayloadBase::LinkLayer,
            1 => PayloadBase::Network,
            2 => PayloadBase::Transport,
            3 => PayloadBase::Inner,
            _ => return None,
        })
    }
}

impl NatType {
    /// The `NFT_NAT_*` number.
    pub fn number(self) -> u32 {
        match self {
            NatType::Snat => 0,
            NatType::Dnat => 1,
        }
    }

    /// The NAT type for an `NFT_NAT_*` number.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            0 => Some(NatType::Snat),
            1 => Some(NatType::Dnat),
            _ => None,
        }
    }
}

impl Verdict {
    /// The verdict code (`NF_ACCEPT` 1, `NF_DROP` 0, `NFT_JUMP` -3, ...).
    pub fn code(&self) -> i32 {
        match self {
            Verdict::Accept => 1,
            Verdict::Drop => 0,
            Verdict::Continue => -1,
            Verdict::Return => -5,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
        }
    }

    /// The target chain of a jump or goto.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

impl Set {
    /// Whether this is a map (`NFT_SET_MAP`).
    pub fn is_map(&self) -> bool {
        self.flags & set_flags::MAP != 0
    }
}

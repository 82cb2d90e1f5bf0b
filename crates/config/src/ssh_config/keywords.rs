//! The keywords: the ones rsh acts on with their typed values, and the
//! ssh ones it accepts and ignores.

use super::error::Origin;
use std::time::Duration;

/// What to do with a host key the client has not pinned yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Refuse unknown hosts (`yes`).
    Yes,
    /// Record unknown hosts' keys and go on (`accept-new`, and also `no`,
    /// `off`, `false`: rsh never accepts a changed key).
    AcceptNew,
    /// Ask on the terminal; refuse when there is none (`ask`, the default).
    Ask,
}

impl StrictHostKeyChecking {
    /// The word `ssh -G` prints for it.
    pub fn as_ssh_g(self) -> &'static str {
        match self {
            StrictHostKeyChecking::Yes => "true",
            StrictHostKeyChecking::AcceptNew => "accept-new",
            StrictHostKeyChecking::Ask => "ask",
        }
    }
}

/// An ssh option that was accepted and has no effect in rsh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The keyword as written.
    pub keyword: String,
    /// Its arguments, joined by single spaces.
    pub value: String,
    /// Where it was given.
    pub origin: Origin,
}

/// The keys rsh acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    HostName,
    Port,
    User,
    IdentityFile,
    ConnectTimeout,
    ServerAliveInterval,
    ServerAliveCountMax,
    StrictHostKeyChecking,
    BatchMode,
}

impl Key {
    const ALL: [Key; 9] = [
        Key::HostName,
        Key::Port,
        Key::User,
        Key::IdentityFile,
        Key::ConnectTimeout,
        Key::ServerAliveInterval,
        Key::ServerAliveCountMax,
        Key::StrictHostKeyChecking,
        Key::BatchMode,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Key::HostName => "HostName",
            Key::Port => "Port",
            Key::User => "User",
            Key::IdentityFile => "IdentityFile",
            Key::ConnectTimeout => "ConnectTimeout",
            Key::ServerAliveInterval => "ServerAliveInterval",
            Key::ServerAliveCountMax => "ServerAliveCountMax",
            Key::StrictHostKeyChecking => "StrictHostKeyChecking",
            Key::BatchMode => "BatchMode",
        }
    }

    pub(super) fn lookup(keyword: &str) -> Option<Key> {
        Key::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(keyword))
    }
}

/// OpenSSH client keywords (ssh_config(5), current and deprecated) that rsh
/// accepts and ignores. Lowercase.
pub(super) const SSH_KEYWORDS: &[&str] = &[
    "addkeystoagent",
    "addressfamily",
    "batchmode",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "certificatefile",
    "challengeresponseauthentication",
    "channeltimeout",
    "checkhostip",
    "cipher",
    "ciphers",
    "clearallforwardings",
    "compression",
    "compressionlevel",
    "connectionattempts",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dsaauthentication",
    "dynamicforward",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "exitonforwardfailure",
    "fallbacktorsh",
    "fingerprinthash",
    "forkafterauthentication",
    "forwardagent",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "globalknownhostsfile",
    "gssapiauthentication",
    "gssapiclientidentity",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapirenewalforcesrekey",
    "gssapiserveridentity",
    "gssapitrustdns",
    "hashknownhosts",
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "hostbasedkeytypes",
    "hostkeyalgorithms",
    "hostkeyalias",
    "identitiesonly",
    "identityagent",
    "ipqos",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "kexalgorithms",
    "knownhostscommand",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "macs",
    "nohostauthenticationforlocalhost",
    "numberofpasswordprompts",
    "obscurekeystroketiming",
    "passwordauthentication",
    "permitlocalcommand",
    "permitremoteopen",
    "pkcs11provider",
    "preferredauthentications",
    "protocol",
    "proxycommand",
    "proxyjump",
    "proxyusefdpass",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "requiredrsasize",
    "revokedhostkeys",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "sendenv",
    "sessiontype",
    "setenv",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "syslogfacility",
    "tag",
    "tcpkeepalive",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "usekeychain",
    "useprivilegedport",
    "useroaming",
    "userknownhostsfile",
    "verifyhostkeydns",
    "visualhostkey",
    "warnweakcrypto",
    "xauthlocation",
];

/// A typed value of a [`Key`]. Paths and host names keep their tokens until
/// resolution, where the host is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Text(String),
    Port(u16),
    Duration(Duration),
    Count(u32),
    Strict(StrictHostKeyChecking),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Setting { key: Key, value: Value },
    Ignored(Ignored),
}

/// One setting with the `Host` lines (indices into `ClientConfig::hosts`)
/// that must all match for it to apply: the enclosing block's, and those of
/// the blocks around the `Include`s that led to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) conditions: Vec<usize>,
    pub(super) item: Item,
}

//! What a caller may do: the roles of the tokens file, plain data that the domain error
//! (PERMISSION_DENIED names the role required) and the guard both use.

use std::fmt;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every Get, List, Stream and analytics RPC.
    Reader,
    /// Also creates, updates, logs, imports and deletes without purge.
    Writer,
    /// Also purges customers and reads the audit trail.
    Admin,
}

impl Role {
    /// The role's name as written in the tokens file and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name (`reader`, `writer`, `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

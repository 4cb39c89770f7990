//! Who is calling: the caller's name, role and connection, as the security guard
//! established them; plain data that handlers pass down to the audit trail.

use std::fmt;
use std::net::SocketAddr;

use crate::error::Error;

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

/// Who is calling, as established by the guard; in every guarded request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `anonymous` when the server runs without a tokens file.
    pub name: String,
    /// What the caller may do (`admin` without a tokens file: loopback only).
    pub role: Role,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The subject of the client's TLS certificate (mutual TLS only).
    pub certificate: Option<String>,
}

impl Caller {
    /// A caller for work the server does itself or for tools (`seed-demo`).
    pub fn system(name: &str) -> Caller {
        Caller {
            name: name.to_owned(),
            role: Role::Admin,
            peer: None,
            certificate: None,
        }
    }

    /// Fails with PERMISSION_DENIED unless the caller has at least `role`.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Error> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Error::PermissionDenied {
                required: role,
                message: format!(
                    "{what} needs the {role} role; `{}` is a {}",
                    self.name, self.role
                ),
            })
        }
    }
}

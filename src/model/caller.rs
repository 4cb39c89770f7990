//! Who is calling: the caller's name, role and connection, as the security guard
//! established them; plain data that handlers pass down to the audit trail.

use std::net::SocketAddr;

use crate::error::Error;

pub use super::role::Role;

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

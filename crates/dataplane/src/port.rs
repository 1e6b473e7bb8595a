//! The two ports of the bridge.

/// A bridge port: A faces the clients (the switch), B the servers (the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    A,
    B,
}

impl Port {
    pub fn peer(self) -> Port {
        match self {
            Port::A => Port::B,
            Port::B => Port::A,
        }
    }

    /// This port's element of a per-port pair (no bounds check needed: two ports, two slots).
    pub fn of<T>(self, pair: &[T; 2]) -> &T {
        let [a, b] = pair;
        match self {
            Port::A => a,
            Port::B => b,
        }
    }

    pub fn of_mut<T>(self, pair: &mut [T; 2]) -> &mut T {
        let [a, b] = pair;
        match self {
            Port::A => a,
            Port::B => b,
        }
    }
}

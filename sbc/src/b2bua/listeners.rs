//! The core's view of its listeners: which realm each serves, which are
//! retiring after a reload (serving only the dialogs and transactions that
//! use them) and when one may close; and which listener reaches a trunk.
//!
//! Owns: [`CoreListener`] states. May not: open or close sockets (the IO
//! shell does, when [`Core::poll_closable_listener`] says so).

use super::*;

/// A listener and whether it takes new calls.
#[derive(Clone, Debug)]
pub(super) struct CoreListener {
    pub(super) info: ListenerInfo,
    pub(super) state: ListenerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListenerState {
    /// Serves everything.
    Active,
    /// Gone from the configuration: serves the dialogs and transactions
    /// that use it, refuses new calls with 503, and closes once unused.
    Retiring,
    /// Closed by the IO shell (or an id the core never had).
    Closed,
}

impl Core {
    /// An active listener of `realm` for `transport` in `peer`'s address
    /// family.
    pub(super) fn realm_listener(
        &self,
        realm: usize,
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<usize> {
        let realm = &self.realms.get(realm)?.name;
        self.listeners.iter().position(|l| {
            let l_info = &l.info;
            l.state == ListenerState::Active
                && &l_info.realm == realm
                && l_info.transport == transport
                && l_info.addr.is_ipv4() == peer.is_ipv4()
        })
    }

    /// The listeners after a reload: `active` are those that take new calls
    /// (ids from the transports, old and new). Every other listener the core
    /// knew retires: it keeps serving the dialogs and transactions that use
    /// it, and [`Core::poll_closable_listener`] says when it is unused.
    pub fn set_listeners(&mut self, active: &[(ListenerId, ListenerInfo)]) {
        for listener in &mut self.listeners {
            if listener.state == ListenerState::Active {
                listener.state = ListenerState::Retiring;
            }
        }
        for (id, info) in active {
            if self.listeners.len() <= id.0 {
                self.listeners.resize(
                    id.0 + 1,
                    CoreListener {
                        info: info.clone(),
                        state: ListenerState::Closed,
                    },
                );
            }
            self.listeners[id.0] = CoreListener {
                info: info.clone(),
                state: ListenerState::Active,
            };
        }
    }

    /// A retiring listener that no call leg, transaction or health check
    /// uses any more: the IO shell closes it now. Marked closed here, so
    /// each comes out once.
    pub fn poll_closable_listener(&mut self) -> Option<ListenerId> {
        let index = self.listeners.iter().enumerate().position(|(i, l)| {
            l.state == ListenerState::Retiring && !self.listener_in_use(ListenerId(i))
        })?;
        self.listeners[index].state = ListenerState::Closed;
        Some(ListenerId(index))
    }

    pub(super) fn listener_active(&self, id: ListenerId) -> bool {
        self.listeners
            .get(id.0)
            .is_some_and(|l| l.state == ListenerState::Active)
    }

    pub(super) fn listener_in_use(&self, id: ListenerId) -> bool {
        self.sent_from.values().any(|(l, _, _)| *l == id)
            || self
                .calls
                .values()
                .any(|c| c.a.listener == id || c.b.as_ref().is_some_and(|b| b.listener == id))
    }

    /// Listeners retiring (waiting for their calls to end).
    pub fn retiring_listeners(&self) -> usize {
        self.listeners
            .iter()
            .filter(|l| l.state == ListenerState::Retiring)
            .count()
    }

    pub(super) fn listener_realm(&self, listener: ListenerId) -> Option<usize> {
        let listener = self.listeners.get(listener.0)?;
        if listener.state == ListenerState::Closed {
            return None;
        }
        self.realms
            .iter()
            .position(|r| r.name == listener.info.realm)
    }
}

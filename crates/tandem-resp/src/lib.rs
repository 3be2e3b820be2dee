//! The Redis protocol, pure and shared by the node and the router: the
//! bounded request parser and reply encoder (`codec`), the framing of
//! replies a relay passes on unread (`frame`), the connection commands and
//! the authentication gate (`conn`), and which records each
//! command reads or writes (`command`). No I/O here: the node's and the
//! router's `resp` modules own the sockets.

pub mod codec;
pub mod command;
pub mod conn;
pub mod frame;

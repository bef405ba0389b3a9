//! Microsoft Graph inbox watcher.

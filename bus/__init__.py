"""docbus: a document-interconnection message bus for government agencies."""

"""Live streams: chunking, the bounded joint token cache with KV reuse, asking, scheduling."""

"""Echo's asyncio service: WebRTC/WHIP ingest, the realtime event protocol, session stores."""

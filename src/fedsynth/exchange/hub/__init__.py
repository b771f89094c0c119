"""The generator hub's FastAPI app, split by concern: :mod:`.settings`, :mod:`.state`,
:mod:`.auth`, :mod:`.ledger`, :mod:`.routes`, :mod:`.fastlane`, :mod:`.views`,
:mod:`.audit_log`; :func:`.app.create_app` wires them together."""

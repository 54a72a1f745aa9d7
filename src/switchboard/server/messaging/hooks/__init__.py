"""The messaging API's event handler RPCs (the handlers themselves are the event_handlers
package)."""

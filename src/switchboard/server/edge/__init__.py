"""The Envoy edge: REST (three families) and native gRPC in front of the switchboard servers."""

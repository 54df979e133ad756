"""The HTTP layer: routes, their responses, and the checks on a request before
it reaches the pump."""

"""overseer-gateway: the one component that holds model API keys and money.

Goal pods call the Anthropic Messages API through it with a pod-bound ServiceAccount token;
it finds the pod's Goal and Agent, forwards to the Agent's model endpoint with the Agent's key,
and (with a database) prices and budgets every call. docs/gateway.md describes it.
"""

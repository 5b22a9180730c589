"""The OpenAI wire model, defined once and shared by the model server and the router."""

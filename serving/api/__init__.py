"""The HTTP layer: a Flask app (TGI's routes, OpenAI's Messages API, SageMaker's) in front of the engine client."""

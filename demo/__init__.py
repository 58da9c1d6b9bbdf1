"""How people reach explainzoo: the ``explainzoo`` CLI and the Gradio app."""

"""``clip2depth app``: a Gradio web page for depth from any photo (needs the ``app`` extra: gradio).

:mod:`clip2depth.app.predict` computes (no Gradio), :mod:`clip2depth.app.ui` builds and serves the page.
"""

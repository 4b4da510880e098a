"""The one-shot workflow driven through the MONAI Label REST protocol only, and its report (issue 6)."""

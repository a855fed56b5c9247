"""The local web app (`<package> ui`): configure, launch, watch and compare experiments; see server.py."""

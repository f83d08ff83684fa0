# Accounts use Django's own User and Group models; roles are groups (see roles.py).

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title BlockFL reward token
/// @notice An OpenZeppelin ERC-20 that only its minter (the BlockFL contract that deployed it) can mint.
contract RewardToken is ERC20 {
    /// @notice The only address allowed to mint: the BlockFL contract.
    address public immutable minter;

    error NotMinter(address caller);

    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {
        minter = msg.sender;
    }

    /// @notice Mint `amount` tokens to `to`; callable by the minter only.
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, amount);
    }
}

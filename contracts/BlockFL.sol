// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {RewardToken} from "./RewardToken.sol";

/// @title BlockFL: blocks of signed local model updates, proof-of-work checked, rewards minted
/// @notice One block per round. A registered miner submits the block of round `head + 1`
/// holding every verified local update (sorted by device address), the hash of the aggregated
/// global model, and a proof-of-work nonce. The contract checks the chain link, the round,
/// the proof-of-work, each device's EIP-712 signature and the sample-count cap, records the
/// block, and mints the data reward (rewardPerSample x samples) to every device and the mining
/// reward to the miner. A second block for a committed round is a fork and reverts with
/// `RoundAlreadyCommitted`, distinct from every invalid-block error.
contract BlockFL is Ownable, EIP712 {
    /// @notice A device's signed local update as carried in a block.
    struct Update {
        address device;
        bytes32 baseModelHash;
        bytes32 updateHash;
        uint64 samples;
        uint64 computeTimeMs;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice A committed block.
    struct BlockRecord {
        bytes32 blockHash;
        bytes32 prevHash;
        bytes32 globalModelHash;
        bytes32 updatesRoot;
        address miner;
        uint32 numUpdates;
        uint64 timestamp;
        uint64 totalSamples;
        uint256 nonce;
    }

    /// @notice Parameters fixed at deployment (the target can be changed by the owner).
    struct Params {
        uint256 target;
        uint256 rewardPerSample;
        uint256 miningReward;
        uint64 maxSamplesPerUpdate;
        uint32 maxUpdatesPerBlock;
        bool deviceAllowList;
        bytes32 genesisModelHash;
        bytes32 protocolSpecHash;
        uint8 mode;
        uint16 quorum;
    }

    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "LocalUpdate(address device,uint64 round,bytes32 baseModelHash,bytes32 updateHash,uint64 samples,uint64 computeTimeMs)"
    );

    RewardToken public immutable token;
    Params internal _params;
    uint64 public headRound;
    mapping(uint64 round => BlockRecord) internal _blocks;
    mapping(address => bool) public isMiner;
    mapping(address => bool) public isDeviceAllowed;

    event MinerAdded(address indexed miner);
    event DeviceAllowed(address indexed device, bool allowed);
    event TargetChanged(uint256 target);
    event BlockCommitted(
        uint64 indexed round,
        bytes32 indexed blockHash,
        address indexed miner,
        bytes32 globalModelHash,
        bytes32 updatesRoot,
        uint256 numUpdates,
        uint256 totalSamples,
        uint256 nonce
    );
    event UpdateAccepted(
        uint64 indexed round, address indexed device, bytes32 updateHash, uint256 samples, uint256 reward
    );

    error NotMiner(address sender);
    error RoundAlreadyCommitted(uint64 round, bytes32 committedHash);
    error WrongRound(uint64 expected, uint64 given);
    error WrongPreviousHash(bytes32 expected, bytes32 given);
    error EmptyBlock();
    error TooManyUpdates(uint256 count, uint256 max);
    error UpdatesNotSorted(uint256 index);
    error DuplicateDevice(uint256 index, address device);
    error DeviceNotAllowed(uint256 index, address device);
    error SampleCountOutOfRange(uint256 index, uint64 samples, uint64 cap);
    error StaleBaseModel(uint256 index, bytes32 expected, bytes32 given);
    error MalformedSignature(uint256 index);
    error InvalidSignature(uint256 index, address device, address signer);
    error InsufficientWork(bytes32 blockHash, uint256 target);

    constructor(Params memory params_, address[] memory miners_)
        Ownable(msg.sender)
        EIP712("BlockFL", "1")
    {
        _params = params_;
        token = new RewardToken("BlockFL Reward", "BFLR");
        for (uint256 i = 0; i < miners_.length; ++i) {
            _addMiner(miners_[i]);
        }
    }

    // ------------------------------------------------------------------ administration

    /// @notice Register a miner (owner only).
    function addMiner(address miner) external onlyOwner {
        _addMiner(miner);
    }

    /// @notice Allow or disallow a device when the allow-list is enabled (owner only).
    function setDeviceAllowed(address device, bool allowed) external onlyOwner {
        isDeviceAllowed[device] = allowed;
        emit DeviceAllowed(device, allowed);
    }

    /// @notice Change the proof-of-work target, i.e. the block generation rate (owner only).
    function setTarget(uint256 target) external onlyOwner {
        _params.target = target;
        emit TargetChanged(target);
    }

    // ------------------------------------------------------------------ views

    /// @notice The parameters of this deployment.
    function parameters() external view returns (Params memory) {
        return _params;
    }

    /// @notice Hash of the protocol spec every node must run (keccak of its canonical JSON).
    function protocolSpecHash() external view returns (bytes32) {
        return _params.protocolSpecHash;
    }

    /// @notice The chain head: last committed round, its block hash and global model hash.
    function head() external view returns (uint64 round, bytes32 blockHash, bytes32 globalModelHash) {
        round = headRound;
        (blockHash, globalModelHash) = _headLink();
    }

    /// @notice The block committed for `round` (all zero if none).
    function getBlock(uint64 round) external view returns (BlockRecord memory) {
        return _blocks[round];
    }

    /// @notice The EIP-712 digest a device signs for its update in `round`.
    function updateDigest(
        address device,
        uint64 round,
        bytes32 baseModelHash,
        bytes32 updateHash,
        uint64 samples,
        uint64 computeTimeMs
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(UPDATE_TYPEHASH, device, round, baseModelHash, updateHash, samples, computeTimeMs)
            )
        );
    }

    /// @notice The block hash that the proof-of-work must bring at or below `target`.
    function blockHashOf(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        bytes32 updatesRoot,
        address miner,
        uint256 nonce
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(prevHash, round, globalModelHash, updatesRoot, miner, nonce));
    }

    // ------------------------------------------------------------------ the block

    /// @notice Commit the block of `round` (must be head + 1), paying every device and the miner.
    function commitBlock(
        bytes32 prevHash,
        uint64 round,
        bytes32 globalModelHash,
        Update[] calldata updates,
        uint256 nonce
    ) external returns (bytes32 blockHash) {
        if (!isMiner[msg.sender]) revert NotMiner(msg.sender);
        uint64 current = headRound;
        if (round <= current) revert RoundAlreadyCommitted(round, _blocks[round].blockHash);
        if (round != current + 1) revert WrongRound(current + 1, round);
        (bytes32 headHash, bytes32 baseModel) = _headLink();
        if (prevHash != headHash) revert WrongPreviousHash(headHash, prevHash);

        Params memory p = _params;
        uint256 n = updates.length;
        if (n == 0) revert EmptyBlock();
        if (n > p.maxUpdatesPerBlock) revert TooManyUpdates(n, p.maxUpdatesPerBlock);

        bytes32[] memory digests = new bytes32[](n);
        uint256 totalSamples;
        for (uint256 i = 0; i < n; ++i) {
            digests[i] = _checkUpdate(updates, i, round, baseModel, p);
            totalSamples += updates[i].samples;
        }
        bytes32 updatesRoot = keccak256(abi.encodePacked(digests));
        blockHash = blockHashOf(prevHash, round, globalModelHash, updatesRoot, msg.sender, nonce);
        if (uint256(blockHash) > p.target) revert InsufficientWork(blockHash, p.target);

        headRound = round;
        _blocks[round] = BlockRecord({
            blockHash: blockHash,
            prevHash: prevHash,
            globalModelHash: globalModelHash,
            updatesRoot: updatesRoot,
            miner: msg.sender,
            numUpdates: uint32(n),
            timestamp: uint64(block.timestamp),
            totalSamples: uint64(totalSamples),
            nonce: nonce
        });
        emit BlockCommitted(round, blockHash, msg.sender, globalModelHash, updatesRoot, n, totalSamples, nonce);

        for (uint256 i = 0; i < n; ++i) {
            Update calldata u = updates[i];
            uint256 reward = uint256(u.samples) * p.rewardPerSample;
            token.mint(u.device, reward);
            emit UpdateAccepted(round, u.device, u.updateHash, u.samples, reward);
        }
        if (p.miningReward > 0) token.mint(msg.sender, p.miningReward);
    }

    // ------------------------------------------------------------------ internals

    function _addMiner(address miner) internal {
        isMiner[miner] = true;
        emit MinerAdded(miner);
    }

    /// @dev Check update `i` of a block of `round`; return its EIP-712 digest.
    function _checkUpdate(
        Update[] calldata updates,
        uint256 i,
        uint64 round,
        bytes32 baseModel,
        Params memory p
    ) internal view returns (bytes32 digest) {
        Update calldata u = updates[i];
        if (i > 0) {
            address previous = updates[i - 1].device;
            if (u.device == previous) revert DuplicateDevice(i, u.device);
            if (u.device < previous) revert UpdatesNotSorted(i);
        }
        if (p.deviceAllowList && !isDeviceAllowed[u.device]) revert DeviceNotAllowed(i, u.device);
        if (u.samples == 0 || u.samples > p.maxSamplesPerUpdate) {
            revert SampleCountOutOfRange(i, u.samples, p.maxSamplesPerUpdate);
        }
        if (u.baseModelHash != baseModel) revert StaleBaseModel(i, baseModel, u.baseModelHash);
        digest = updateDigest(u.device, round, u.baseModelHash, u.updateHash, u.samples, u.computeTimeMs);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, u.v, u.r, u.s);
        if (err != ECDSA.RecoverError.NoError) revert MalformedSignature(i);
        if (signer != u.device) revert InvalidSignature(i, u.device, signer);
    }

    function _headLink() internal view returns (bytes32 blockHash, bytes32 globalModelHash) {
        uint64 current = headRound;
        if (current == 0) return (bytes32(0), _params.genesisModelHash);
        BlockRecord storage b = _blocks[current];
        return (b.blockHash, b.globalModelHash);
    }
}
